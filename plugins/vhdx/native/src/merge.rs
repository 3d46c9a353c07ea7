//! Merging a differencing disk into its parent, crash-safe by write order:
//! 1. the child's parent locator gets parent_linkage2 = G (new item, then one table entry);
//! 2. the parent's headers get DataWriteGuid = G before any data changes;
//! 3. every range the child defines is copied (or zeroed) into the parent, then flushed.
//! At every step the chain child -> parent opens (through parent_linkage or parent_linkage2) and
//! reads exactly what it read before the merge, so an interrupted merge can simply be run again.
use crate::chain::Disk;
use crate::error::{Error, Result};
use crate::image::{Layer, Src};
use crate::util::*;

pub fn merge_into_parent(child_path: &str, explicit_parent: Option<&str>, force: bool) -> Result<String> {
    let parents: Vec<String> = explicit_parent.map(|p| vec![p.to_string()]).unwrap_or_default();
    let chain = Disk::open(child_path, &parents, false, force)?;
    if chain.layers.len() < 2 {
        return Err(Error::invalid(format!("{child_path}: not a differencing disk; there is no parent to merge into")));
    }
    let parent_path = chain.layers[1].path.clone();
    let mut pl = chain.layers[0].md.parent_locator.clone().unwrap_or_default();
    drop(chain);

    let g = Guid::random();
    {
        let child = Layer::open_file(child_path, true)?;
        pl.set("parent_linkage2", &g.braced());
        child.rewrite_parent_locator(&pl).map_err(|e| e.at(child_path))?;
    }
    let parent = Disk::open(&parent_path, &[], true, force)?;
    parent.layers[0].state.write().unwrap().data_write_guid_override = Some(g);
    let child = Disk::single(Layer::open_file(child_path, false)?);
    let extents = child.layer_extents(0);
    let chunk = 8 * MIB;
    let mut buf = vec![0u8; chunk as usize];
    for (off, len, src) in extents {
        match src {
            Src::Zero => parent.write_zeroes(off, len)?,
            _ => {
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(chunk);
                    child.read(off + done, &mut buf[..n as usize])?;
                    parent.write(off + done, &buf[..n as usize])?;
                    done += n;
                }
            }
        }
    }
    // a merge of a child that defines nothing still marks the parent as changed (linkage G)
    {
        let top = &parent.layers[0];
        let mut st = top.state.write().unwrap();
        if st.header.data_write_guid != g {
            top.bump_header(&mut st, false)?;
        }
    }
    parent.flush()?;
    Ok(parent_path)
}
