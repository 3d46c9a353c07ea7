import test from 'ava';
import { findMount, mountContaining, parseMountInfo, selectLikeVssDaemon, selectMountPoints } from './mounts.ts';

// A guest's mountinfo: root ext4, /boot/efi vfat, /data xfs (also bind-mounted), a read-only
// iso, a loop-mounted image, btrfs with two subvolume mounts, tmpfs and proc.
const MOUNTINFO = [
  '22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw,errors=remount-ro',
  '23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw',
  '24 22 0:22 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=812k,mode=755',
  '25 22 8:1 / /boot/efi rw,relatime shared:29 - vfat /dev/sda1 rw,fmask=0077',
  '26 22 8:17 / /data rw,relatime shared:30 - xfs /dev/sdb1 rw,attr2,inode64',
  '27 22 11:0 / /media/cd ro,relatime shared:31 - iso9660 /dev/sr0 ro',
  '28 22 7:0 / /mnt/image rw,relatime shared:32 - ext4 /dev/loop0 rw',
  '29 22 0:45 /@home /home rw,relatime shared:33 - btrfs /dev/sdc rw,subvol=/@home',
  '30 22 0:45 /@srv /srv rw,relatime shared:34 - btrfs /dev/sdc rw,subvol=/@srv',
  '31 22 8:17 /exports /srv/nfs\\040export rw,relatime shared:30 - xfs /dev/sdb1 rw,attr2,inode64',
  '32 22 259:3 / /mnt/ro-remount ro,relatime shared:35 - ext4 /dev/nvme0n1p3 rw',
].join('\n');

test('parseMountInfo reads fields, escapes and read-only flags', (t) => {
  const entries = parseMountInfo(MOUNTINFO);
  t.is(entries.length, 11);
  t.deepEqual(entries[0], { device: '253:0', mountPoint: '/', fsType: 'ext4', source: '/dev/mapper/vg-root', readOnly: false });
  t.is(entries[9].mountPoint, '/srv/nfs export');
  t.true(entries[5].readOnly);
  t.true(entries[10].readOnly, 'a mount-level ro counts');
});

test('parseMountInfo names the line that does not parse', (t) => {
  const error = t.throws(() => parseMountInfo('22 1 253:0 / / rw\n', '/x/mountinfo'));
  t.regex(error.message, /\/x\/mountinfo: line 1 is not a mountinfo line/);
});

test('selectLikeVssDaemon: writable block-device filesystems, no loop, no vfat, each filesystem once, root last', (t) => {
  const targets = selectLikeVssDaemon(parseMountInfo(MOUNTINFO), new Set());
  t.deepEqual(
    targets.map((x) => [x.mountPoint, x.alsoMountedAt]),
    [
      ['/data', ['/srv/nfs export']],
      ['/home', ['/srv']],
      ['/', []],
    ],
  );
});

test('selectLikeVssDaemon skips loop devices known by major:minor too', (t) => {
  const text = '40 1 8:2 / / rw - ext4 /dev/sda2 rw\n41 40 7:5 / /img rw - xfs /dev/mapper/img-on-loop rw';
  t.deepEqual(
    selectLikeVssDaemon(parseMountInfo(text), new Set(['7:5'])).map((x) => x.mountPoint),
    ['/'],
  );
});

test('selectMountPoints keeps order, puts root last, and refuses paths that are not mount points', (t) => {
  const entries = parseMountInfo(MOUNTINFO);
  t.deepEqual(selectMountPoints(entries, ['/', '/home/', '/data'], 'VM x').map((x) => x.mountPoint), ['/home', '/data', '/']);
  const error = t.throws(() => selectMountPoints(entries, ['/data/db', '/home'], 'VM x'));
  t.regex(error.message, /^VM x: "\/data\/db" is not a mount point on the guest/);
  t.regex(error.message, /would freeze the whole filesystem/);
});

test('findMount takes the mount on top; mountContaining the longest prefix', (t) => {
  const entries = parseMountInfo(`${MOUNTINFO}\n33 26 0:50 / /data rw - tmpfs tmpfs rw`);
  t.is(findMount(entries, '/data')?.fsType, 'tmpfs');
  t.is(mountContaining(entries, '/srv/nfs export/a')?.device, '8:17');
  t.is(mountContaining(entries, '/srvx')?.mountPoint, '/');
});
