//! Delivery into maildirs: one file per recipient under
//! `<path>/<mailbox>/new/`, written to `tmp/`, fsync'd, then renamed, so a
//! reader never sees half a message. The file name is fixed by the queue id
//! and recipient, so delivering twice after a crash rewrites the same file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use magicmx_proto::Address;

use crate::queue::Body;

/// The mailbox directory for a recipient: the local part, lower-cased, with
/// anything but `[a-z0-9._+=-]` percent-encoded (no `/`, no `..`).
pub fn mailbox_dir(root: &Path, recipient: &Address) -> PathBuf {
    let mut name = String::new();
    for b in recipient.local.to_lowercase().bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'+' | b'=' | b'-' => name.push(b as char),
            b'.' if !name.is_empty() => name.push('.'),
            _ => name.push_str(&format!("%{b:02X}")),
        }
    }
    root.join(name)
}

/// Writes one message for one recipient; returns the final path.
pub fn deliver(
    root: &Path,
    recipient: &Address,
    unique: &str,
    header: &[u8],
    body: &Body,
) -> std::io::Result<PathBuf> {
    let mailbox = mailbox_dir(root, recipient);
    let (tmp, new) = (mailbox.join("tmp"), mailbox.join("new"));
    for dir in [&tmp, &new, &mailbox.join("cur")] {
        fs::create_dir_all(dir)?;
    }
    let tmp_path = tmp.join(unique);
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp_path)?;
    file.write_all(header)?;
    body.copy_to(&mut file)?;
    file.sync_all()?;
    drop(file);
    let final_path = new.join(unique);
    fs::rename(&tmp_path, &final_path)?;
    File::open(&new)?.sync_all()?;
    Ok(final_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_names_cannot_escape_the_root() {
        let root = Path::new("/m");
        let a = |s: &str| Address::parse(s).unwrap();
        assert_eq!(mailbox_dir(root, &a("Bob@x.test")), Path::new("/m/bob"));
        assert_eq!(mailbox_dir(root, &a("first.last@x.test")), Path::new("/m/first.last"));
        assert_eq!(mailbox_dir(root, &a("..@x.test")), Path::new("/m/%2E."));
        assert_eq!(mailbox_dir(root, &a("a/../b@x.test")), Path::new("/m/a%2F..%2Fb"));
    }

    #[test]
    fn delivery_writes_into_new_and_leaves_tmp_empty() {
        let dir = tempfile::tempdir().unwrap();
        let rcpt = Address::parse("bob@example.test").unwrap();
        let spooled = dir.path().join("spooled");
        fs::write(&spooled, b"body\r\n").unwrap();
        let info = crate::queue::Arrival::local(b"Received: r\r\n".to_vec(), false);
        let body = Body::spooled(info, spooled, 6);
        let path = deliver(dir.path(), &rcpt, "1.M1R0.host", b"H: 1\r\n", &body).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"H: 1\r\nReceived: r\r\nbody\r\n");
        assert!(path.starts_with(dir.path().join("bob/new")));
        assert_eq!(fs::read_dir(dir.path().join("bob/tmp")).unwrap().count(), 0);
        deliver(dir.path(), &rcpt, "1.M1R0.host", b"H: 1\r\n", &body).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("bob/new")).unwrap().count(), 1, "same name: no duplicate");
    }
}
