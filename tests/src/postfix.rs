//! A private Postfix instance inside a [`World`]: a real sending MTA that
//! looks MX records up, or a domain's real MX that asks the mesh's policy
//! service. Its configuration lives under a directory of the test's own;
//! the system instance is never touched. Stopped when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::world::World;

pub struct Postfix {
    dir: PathBuf,
    netns: String,
}

/// The services of master.cf besides the SMTP listener; nothing chrooted.
const SERVICES: &str = include_str!("../../bench/lib/master-services.cf");

impl Postfix {
    /// Writes an instance named `hostname` under `dir`, listening on
    /// `listen`, with `settings` added to main.cf, `services` to master.cf
    /// (and `transport` as its transport map, when given), and starts it
    /// inside `world`.
    pub fn start(
        world: &World,
        dir: &Path,
        hostname: &str,
        listen: SocketAddr,
        settings: &str,
        services: &str,
        transport: Option<&str>,
    ) -> Postfix {
        let etc = dir.join("etc");
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        searchable_by_postfix(dir);
        let status = Command::new("chown").args(["postfix"]).arg(dir.join("data")).status();
        assert!(status.is_ok_and(|s| s.success()), "chown postfix (is Postfix installed? see .ci/run)");
        let d = dir.display();
        let mut main = format!(
            "compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
myhostname = {hostname}
myorigin = $myhostname
# Postfix accepts only its interfaces' own addresses here; the listener's
# address (a 127.x of its own) is in master.cf.
inet_interfaces = loopback-only
inet_protocols = ipv4
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
smtpd_peername_lookup = no
smtpd_client_event_limit_exceptions =
postscreen_access_list =
smtp_tls_security_level = none
default_process_limit = 20
{settings}
"
        );
        if let Some(transport) = transport {
            std::fs::write(etc.join("transport"), transport).unwrap();
            main.push_str(&format!("transport_maps = hash:{d}/etc/transport\n"));
            let out =
                Command::new("postmap").arg(format!("hash:{d}/etc/transport")).output().expect("postmap");
            assert!(out.status.success(), "postmap: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::fs::write(etc.join("main.cf"), main).unwrap();
        std::fs::write(
            etc.join("master.cf"),
            format!("{listen} inet n - n - - smtpd\n{SERVICES}{services}\n"),
        )
        .unwrap();
        let postfix = Postfix { dir: dir.to_path_buf(), netns: world.name.clone() };
        let etc = etc.to_str().unwrap();
        for step in ["check", "start"] {
            let out = world.command("postfix").args(["-c", etc, step]).output().expect("postfix");
            assert!(
                out.status.success(),
                "postfix {step} of {}: {}{}\n(without syslog its complaints go to {d}/maillog:)\n{}",
                dir.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                postfix.log()
            );
        }
        world.wait_for_smtp(listen, std::time::Duration::from_secs(30));
        postfix
    }

    /// Its configuration directory (main.cf, master.cf, its tables).
    pub fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// Its log so far (postlogd writes it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// The log lines that mention `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log().lines().filter(|l| l.contains(needle)).map(String::from).collect()
    }

    fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("data/master.lock")).ok()?.trim().parse().ok()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let pid = self.master_pid();
        let etc = self.dir.join("etc");
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.netns, "postfix", "-c"])
            .arg(&etc)
            .arg("stop")
            .output();
        if let Some(pid) = pid {
            for _ in 0..100 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

/// The postfix user must reach the queue: every directory above `dir` searchable.
fn searchable_by_postfix(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut up = Some(dir);
    while let Some(d) = up {
        if d == Path::new("/") {
            break;
        }
        let mode = std::fs::metadata(d).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
        }
        up = d.parent();
    }
}
