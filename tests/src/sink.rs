//! Postfix's smtp-sink as a real MX for tests: it takes (or refuses, as
//! told) every message and dumps each one to a file we can read back.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sink {
    child: Child,
    pub addr: SocketAddr,
    dumps: PathBuf,
}

impl Sink {
    /// Starts smtp-sink on `addr` with `options` (e.g. `["-r", "RCPT"]` for
    /// 4xx to RCPT), dumping messages under `dir`. Fails the test if
    /// smtp-sink (Debian's postfix package) is not installed.
    pub fn start(dir: &Path, addr: SocketAddr, options: &[&str]) -> Sink {
        let sink = Sink::spawn(Command::new(binary()), dir, addr, options);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < deadline, "smtp-sink did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        sink
    }

    /// The same inside a [`crate::World`].
    pub fn start_in(world: &crate::World, dir: &Path, addr: SocketAddr, options: &[&str]) -> Sink {
        let sink = Sink::spawn(world.command(binary()), dir, addr, options);
        world.wait_for_smtp(addr, Duration::from_secs(10));
        sink
    }

    fn spawn(mut command: Command, dir: &Path, addr: SocketAddr, options: &[&str]) -> Sink {
        let dumps = dir.join(format!("sink-{}-{}", addr.ip(), addr.port()));
        std::fs::create_dir_all(&dumps).unwrap();
        // smtp-sink drops to `nobody`; it must reach and write the dump directory.
        for path in [dir, dumps.as_path()] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        if is_root() {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .args(["-d", &format!("{}/msg-", dumps.display())])
            .args(options)
            .arg(addr.to_string())
            .arg("64")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp-sink");
        Sink { child, addr, dumps }
    }

    /// The messages dumped whole so far (smtp-sink's X- headers, then the
    /// message). A dump ends with an empty line; a file without it is still
    /// being written.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dumps)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).filter(|m| m.ends_with("\n\n")).collect()
    }

    /// Waits until at least `count` messages are in, or `timeout` passes.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= count || Instant::now() > deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> &'static str {
    ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("smtp-sink is needed by this test: apt-get install postfix (see .ci/run)")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}
