//! A small tmpfs of a test's own, to fill a node's disk for real: mounted
//! on a directory, filled with a filler file until the kernel says ENOSPC,
//! emptied again, and unmounted when dropped (also when the test fails).
//! Needs root (tests run as root in CI).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    mountpoint: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on `mountpoint` (created if missing).
    pub fn mount(mountpoint: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(mountpoint).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(mountpoint)
            .output()
            .expect("mount(8) is needed by this test");
        assert!(out.status.success(), "mount tmpfs (needs root): {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs { mountpoint: mountpoint.to_path_buf() }
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    fn filler(&self) -> PathBuf {
        self.mountpoint.join("filler")
    }

    /// Fills the file system up to its last byte, leaving `spare` bytes
    /// free; returns the bytes written.
    pub fn fill(&self, spare: u64) -> u64 {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(self.filler()).unwrap();
        let chunk = vec![0x5a; 64 * 1024];
        let mut written = 0;
        loop {
            let room = self.available().saturating_sub(spare);
            if room == 0 {
                break;
            }
            let piece = &chunk[..chunk.len().min(room as usize)];
            match file.write(piece) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", self.mountpoint.display()),
            }
        }
        written
    }

    /// Removes the filler: the space comes back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }

    /// Bytes an unprivileged writer may still use.
    pub fn available(&self) -> u64 {
        let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes()).unwrap();
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a statvfs the call fills in.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        assert_eq!(rc, 0, "statvfs {}", self.mountpoint.display());
        stat.f_bavail as u64 * stat.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.mountpoint).status().is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process of the test holds a file): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.mountpoint).status();
        }
    }
}
