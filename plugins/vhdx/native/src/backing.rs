//! Where an image's bytes live: a file (pread/pwrite, never an exclusive lock when read-only)
//! or memory (the fuzzer). Every read is bounds-checked against the current length.
use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::RwLock;

pub trait Backing: Send + Sync {
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()>;
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()>;
    fn len(&self) -> Result<u64>;
    fn set_len(&self, n: u64) -> Result<()>;
    fn sync(&self) -> Result<()>;
}

pub struct FileBacking {
    pub file: File,
}

fn eof(off: u64, n: usize, len: u64) -> Error {
    Error::corrupt(format!(
        "read of {n} bytes at file offset {off:#x} goes past the end of the file ({len:#x} bytes); the file is truncated or a table points outside it"
    ))
}

impl Backing for FileBacking {
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => return Err(eof(off, buf.len(), self.len().unwrap_or(0))),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&format!("read at {off:#x}"), e)),
            }
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        self.file.write_all_at(buf, off).map_err(|e| Error::io(&format!("write at {off:#x}"), e))
    }
    fn len(&self) -> Result<u64> {
        self.file.metadata().map(|m| m.len()).map_err(|e| Error::io("stat", e))
    }
    fn set_len(&self, n: u64) -> Result<()> {
        self.file.set_len(n).map_err(|e| Error::io("extend file", e))
    }
    fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io("fsync", e))
    }
}

pub struct MemBacking {
    pub data: RwLock<Vec<u8>>,
}

impl Backing for MemBacking {
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let d = self.data.read().unwrap_or_else(|p| p.into_inner());
        let len = d.len() as u64;
        let end = off.checked_add(buf.len() as u64).ok_or_else(|| eof(off, buf.len(), len))?;
        if end > len {
            return Err(eof(off, buf.len(), len));
        }
        buf.copy_from_slice(&d[off as usize..end as usize]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        let mut d = self.data.write().unwrap_or_else(|p| p.into_inner());
        let end = off.checked_add(buf.len() as u64).ok_or_else(|| Error::invalid("write offset overflows"))? as usize;
        if end > d.len() {
            if end > (1usize << 34) {
                return Err(Error::invalid("in-memory image would grow beyond 16 GiB"));
            }
            d.resize(end, 0);
        }
        d[off as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn len(&self) -> Result<u64> {
        Ok(self.data.read().unwrap_or_else(|p| p.into_inner()).len() as u64)
    }
    fn set_len(&self, n: u64) -> Result<()> {
        if n > (1u64 << 34) {
            return Err(Error::invalid("in-memory image would grow beyond 16 GiB"));
        }
        self.data.write().unwrap_or_else(|p| p.into_inner()).resize(n as usize, 0);
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
