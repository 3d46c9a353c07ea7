//! `info`: everything about a chain as JSON (headers, regions, metadata, BAT by state, parent
//! locator, log, link checks).
use crate::chain::Disk;
use crate::format::*;
use crate::image::{bat_state, Layer};
use crate::util::*;

fn header_json(r: &std::result::Result<Header, String>, slot: usize, current: bool) -> String {
    match r {
        Ok(h) => format!(
            "{{\"slot\":{},\"valid\":true,\"current\":{},\"sequenceNumber\":{},\"fileWriteGuid\":{},\"dataWriteGuid\":{},\"logGuid\":{},\"logVersion\":{},\"version\":{},\"logOffset\":{},\"logLength\":{},\"checksum\":{}}}",
            slot + 1,
            current,
            h.seq,
            json_str(&h.file_write_guid.to_string()),
            json_str(&h.data_write_guid.to_string()),
            json_str(&h.log_guid.to_string()),
            h.log_version,
            h.version,
            h.log_offset,
            h.log_length,
            h.checksum
        ),
        Err(e) => format!("{{\"slot\":{},\"valid\":false,\"current\":false,\"error\":{}}}", slot + 1, json_str(e)),
    }
}

pub fn layer_json(l: &Layer) -> String {
    let st = l.state.read().unwrap_or_else(|p| p.into_inner());
    let geo = l.geo;
    let mut counts = [0u64; 8];
    for b in 0..geo.data_blocks {
        counts[bat_state(st.bat[geo.payload_index(b)]) as usize] += 1;
    }
    let mut sb = [0u64; 8];
    for c in 0..geo.bitmap_blocks {
        let i = geo.bitmap_index(c);
        if i < st.bat.len() {
            sb[bat_state(st.bat[i]) as usize] += 1;
        }
    }
    let states: Vec<String> = (0..8)
        .filter(|&s| counts[s] > 0)
        .map(|s| format!("{}:{}", json_str(payload_state_name(s as u8)), counts[s]))
        .collect();
    let sbstates: Vec<String> = if l.md.has_parent {
        (0..8).filter(|&s| sb[s] > 0).map(|s| format!("{}:{}", json_str(sb_state_name(s as u8)), sb[s])).collect()
    } else {
        Vec::new()
    };
    let regions: Vec<String> = l
        .regions
        .iter()
        .map(|r| {
            format!(
                "{{\"guid\":{},\"name\":{},\"offset\":{},\"length\":{},\"required\":{}}}",
                json_str(&r.guid.to_string()),
                json_str(region_name(&r.guid)),
                r.offset,
                r.length,
                r.required
            )
        })
        .collect();
    let locator = match &l.md.parent_locator {
        None => "null".to_string(),
        Some(pl) => format!(
            "{{\"type\":{},\"entries\":{{{}}}}}",
            json_str(&pl.locator_type.to_string()),
            pl.entries.iter().map(|(k, v)| format!("{}:{}", json_str(k), json_str(v))).collect::<Vec<_>>().join(",")
        ),
    };
    let items: Vec<String> = l
        .md
        .entries
        .iter()
        .map(|e| {
            format!(
                "{{\"item\":{},\"offset\":{},\"length\":{},\"isUser\":{},\"isVirtualDisk\":{},\"isRequired\":{}}}",
                json_str(&e.item.to_string()),
                e.offset,
                e.length,
                e.is_user,
                e.is_virtual_disk,
                e.is_required
            )
        })
        .collect();
    let log = match &l.replay {
        None => format!("{{\"replayed\":false,\"staleEntries\":{}}}", l.stale_log_entries),
        Some(r) => format!(
            "{{\"replayed\":true,\"inMemory\":{},\"entriesReplayed\":{},\"writes\":{},\"validEntriesSeen\":{},\"otherGuidEntries\":{},\"lastFileOffset\":{},\"flushedFileOffset\":{}}}",
            l.replay_in_memory,
            r.entries.len(),
            r.writes.len(),
            r.valid_entries_seen,
            r.other_guid_entries,
            r.last_file_offset,
            r.flushed_file_offset
        ),
    };
    let headers = format!(
        "[{},{}]",
        header_json(&l.headers[0], 0, l.current_header == 0),
        header_json(&l.headers[1], 1, l.current_header == 1)
    );
    format!(
        "{{\"path\":{},\"type\":{},\"fileSize\":{},\"headers\":{},\"currentHeader\":{},\"activeHeader\":{{\"sequenceNumber\":{},\"dataWriteGuid\":{},\"fileWriteGuid\":{},\"logGuid\":{}}},\"regionTableUsed\":{},\"regionTableErrors\":[{}],\"regions\":[{}],\"metadata\":{{\"blockSize\":{},\"virtualSize\":{},\"logicalSectorSize\":{},\"physicalSectorSize\":{},\"virtualDiskId\":{},\"leaveBlockAllocated\":{},\"hasParent\":{},\"items\":[{}]}},\"parentLocator\":{},\"bat\":{{\"chunkRatio\":{},\"entries\":{},\"payloadBlocks\":{},\"sectorBitmapBlocks\":{},\"payloadStates\":{{{}}},\"sectorBitmapStates\":{{{}}}}},\"log\":{}}}",
        json_str(&l.path),
        json_str(l.kind_name()),
        l.backing.len().unwrap_or(0),
        headers,
        l.current_header + 1,
        st.header.seq,
        json_str(&st.header.data_write_guid.to_string()),
        json_str(&st.header.file_write_guid.to_string()),
        json_str(&st.header.log_guid.to_string()),
        l.region_table_used + 1,
        l.region_table_errors.iter().map(|e| json_str(e)).collect::<Vec<_>>().join(","),
        regions.join(","),
        l.md.block_size,
        l.md.virtual_size,
        l.md.logical_sector_size,
        l.md.physical_sector_size,
        json_str(&l.md.disk_id.to_string()),
        l.md.leave_block_allocated,
        l.md.has_parent,
        items.join(","),
        locator,
        geo.chunk_ratio,
        geo.bat_entries,
        geo.data_blocks,
        geo.bitmap_blocks,
        states.join(","),
        sbstates.join(","),
        log
    )
}

pub fn disk_json(d: &Disk) -> String {
    let layers: Vec<String> = d.layers.iter().map(layer_json).collect();
    let links: Vec<String> = d
        .links
        .iter()
        .map(|k| {
            format!(
                "{{\"child\":{},\"parent\":{},\"foundBy\":{},\"parentLinkage\":{},\"parentLinkage2\":{},\"parentDataWriteGuid\":{},\"ok\":{},\"forced\":{},\"tried\":[{}]}}",
                json_str(&k.child),
                json_str(&k.parent),
                json_str(&k.found_by),
                k.expected.map(|g| json_str(&g.to_string())).unwrap_or_else(|| "null".into()),
                k.expected2.map(|g| json_str(&g.to_string())).unwrap_or_else(|| "null".into()),
                json_str(&k.actual.to_string()),
                k.ok,
                k.forced,
                k.tried.iter().map(|t| json_str(t)).collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    format!(
        "{{\"virtualSize\":{},\"logicalSectorSize\":{},\"writable\":{},\"layers\":[{}],\"links\":[{}]}}",
        d.virtual_size(),
        d.sector_size(),
        d.writable,
        layers.join(","),
        links.join(",")
    )
}
