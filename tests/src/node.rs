//! The real `magicmx` binary as a child process, with its configuration.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::RawClient;

/// The `magicmx` binary of this build. Cargo builds another package's binary
/// for these tests only when asked, so the first call asks (a no-op when it
/// is up to date).
pub fn magicmx_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let mut build = Command::new(env!("CARGO"));
            build.args(["build", "--quiet", "-p", "magicmx", "--bin", "magicmx"]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(status.success(), "cargo build of the magicmx binary failed");
            profile_dir.join("magicmx")
        })
        .clone()
}

/// The admin API and policy service on ports of the system's choosing, so
/// that test nodes running side by side do not fight over 8025 and 10040.
/// The `[checks]` lines that turn off every check asking DNS (tests without it).
pub const CHECKS_OFF: &str = "fcrdns = \"off\"\nspf = \"off\"\nsender_domain = false\nverify_recipients = false\ndkim = \"off\"\ndmarc = \"off\"\n";

pub const LOOPBACK_ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\npolicy_listen = \"127.0.0.1:0\"\n";

/// A node configuration for tests: SMTP on `port`, data in `dir`, the given
/// domains delivered to maildirs under `dir/maildir`, no greet pause.
pub fn node_config(dir: &Path, port: u16, extra: &str) -> String {
    format!(
        r#"[node]
name = "test-node"
data_dir = "{data}"

[smtp]
listen = ["127.0.0.1:{port}"]
hostname = "mx.mesh.test"
greet_pause = "0s"
{extra}

[checks]
{CHECKS_OFF}
[[domain]]
name = "example.test"
route = "maildir:{maildir}"

{LOOPBACK_ADMIN}"#,
        data = dir.join("data").display(),
        maildir = dir.join("maildir").display(),
    )
}

/// A `magicmx run` child process, killed when dropped.
pub struct NodeProcess {
    child: Child,
    pub smtp: SocketAddr,
    /// The admin API, when read from the log ([`NodeProcess::start_on_port_0`]).
    pub admin: Option<SocketAddr>,
    pub log: PathBuf,
}

impl NodeProcess {
    /// Writes `config` to `dir/magicmx.toml`, starts the node and waits until
    /// its SMTP port answers.
    pub fn start(dir: &Path, config: &str, smtp: SocketAddr) -> NodeProcess {
        let mut node = NodeProcess::spawn(Command::new(magicmx_binary()), dir, config, smtp);
        node.wait_until_listening();
        node
    }

    /// The same inside a [`crate::World`]; it is ready once it logs that it
    /// has started (its listeners are bound by then).
    pub fn start_in(world: &crate::World, dir: &Path, config: &str, smtp: SocketAddr) -> NodeProcess {
        let log_before = std::fs::metadata(dir.join("node.log")).map_or(0, |m| m.len() as usize);
        let mut node = NodeProcess::spawn(world.command(magicmx_binary()), dir, config, smtp);
        node.wait_started(log_before);
        node
    }

    /// Starts a node whose configuration has SMTP and the admin API on port
    /// 0; the addresses it bound are read from its start-up log line.
    pub fn start_on_port_0(dir: &Path, config: &str) -> NodeProcess {
        let log_before = std::fs::metadata(dir.join("node.log")).map_or(0, |m| m.len() as usize);
        let unknown = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut node = NodeProcess::spawn(Command::new(magicmx_binary()), dir, config, unknown);
        let line = node.wait_started(log_before);
        let field = |name: &str| {
            let start =
                line.find(&format!("{name}=")).expect("the address in the start-up line") + name.len() + 1;
            let text = line[start..].trim_start_matches('[');
            let end = text.find([']', ' ', ',']).unwrap_or(text.len());
            text[..end].parse::<SocketAddr>().unwrap_or_else(|e| panic!("{name} in {line:?}: {e}"))
        };
        node.smtp = field("smtp");
        node.admin = Some(field("admin"));
        node
    }

    /// Waits for the "magicmx started" line written after `log_before`; returns it.
    fn wait_started(&mut self, log_before: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.log_text();
            let new = text.get(log_before..).unwrap_or("");
            if let Some(line) = new.lines().find(|l| l.contains("magicmx started")) {
                return line.to_string();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("magicmx exited with {status}:\n{text}");
            }
            assert!(Instant::now() < deadline, "magicmx did not start within 20 s:\n{text}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn spawn(mut command: Command, dir: &Path, config: &str, smtp: SocketAddr) -> NodeProcess {
        let config_path = dir.join("magicmx.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join("node.log");
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start magicmx");
        NodeProcess { child, smtp, admin: None, log }
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("magicmx exited with {status}:\n{}", self.log_text());
            }
            if TcpStream::connect_timeout(&self.smtp, Duration::from_millis(200)).is_ok() {
                // Take the greeting and QUIT, so the probe leaves no session behind.
                let mut probe = RawClient::connect(self.smtp);
                if probe.reply().starts_with("220") {
                    probe.send(b"QUIT\r\n");
                    probe.reply();
                    probe.is_closed();
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("magicmx did not listen on {} within 20 s:\n{}", self.smtp, self.log_text());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (a clean stop), and wait for the process to be gone.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `root/<mailbox>/new`, waiting up to `timeout` until there are `count`.
pub fn wait_for_maildir_files(root: &Path, mailbox: &str, count: usize, timeout: Duration) -> Vec<PathBuf> {
    let new = root.join(mailbox).join("new");
    let deadline = Instant::now() + timeout;
    loop {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
            .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        if files.len() >= count || Instant::now() > deadline {
            return files;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
