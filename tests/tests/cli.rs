//! The `magicmx` command line as an operator meets it.

use std::net::SocketAddr;
use std::process::Command;

use magicmx_tests::{claim_port, magicmx_binary, node_config, NodeProcess};

fn magicmx(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(magicmx_binary()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_config_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.toml");
    std::fs::write(&path, node_config(dir.path(), 2525, "")).unwrap();
    let (ok, stdout, _) = magicmx(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(ok);
    assert!(stdout.contains(": OK") && stdout.contains("example.test"), "{stdout}");
}

#[test]
fn check_config_names_the_file_line_and_key_of_a_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = node_config(dir.path(), 2525, "max_recipents = 5");
    let line = text.lines().position(|l| l.starts_with("max_recipents")).unwrap() + 1;
    std::fs::write(&path, &text).unwrap();
    let (ok, _, stderr) = magicmx(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!ok, "a bad file fails");
    let expected = format!("{}:{line}: smtp.max_recipents: unknown field `max_recipents`", path.display());
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn check_config_names_an_unknown_table_itself_not_the_one_above_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    // node_config ends with [admin]: the unknown table comes after it.
    let text = format!("{}\n[bulk]\nrate = 10\n", node_config(dir.path(), 2525, ""));
    let line = text.lines().position(|l| l == "[bulk]").unwrap() + 1;
    std::fs::write(&path, &text).unwrap();
    let (ok, _, stderr) = magicmx(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!ok, "a bad file fails");
    assert!(stderr.contains(&format!("{}:{line}: unknown table [bulk]", path.display())), "{stderr}");
    assert!(!stderr.contains("admin: unknown field"), "{stderr}");
}

#[test]
fn check_config_bounds_the_dns_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.toml");
    let text = node_config(dir.path(), 2525, "").replace("[checks]\n", "[checks]\ndns_budget = \"0s\"\n");
    let line = text.lines().position(|l| l.starts_with("dns_budget")).unwrap() + 1;
    std::fs::write(&path, &text).unwrap();
    let (ok, _, stderr) = magicmx(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!ok, "a zero budget fails");
    assert!(
        stderr.contains(&format!("{}:{line}: checks.dns_budget: more than zero", path.display())),
        "{stderr}"
    );
    std::fs::write(&path, text.replace("dns_budget = \"0s\"", "dns_budget = \"3s\"")).unwrap();
    let (ok, stdout, stderr) = magicmx(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
}

#[test]
fn check_config_checks_the_disk_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.toml");
    // A bound per block below the largest message: no such message could fit.
    let text = node_config(dir.path(), 2525, "[queue]\nmin_free = 0\nmax_in_flight_per_block = 4096");
    let line = text.lines().position(|l| l.starts_with("max_in_flight_per_block")).unwrap() + 1;
    std::fs::write(&path, &text).unwrap();
    let (ok, _, stderr) = magicmx(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!ok, "a bad file fails");
    let expected = format!("{}:{line}: queue.max_in_flight_per_block: must be at least", path.display());
    assert!(stderr.contains(&expected), "{stderr}");
    let text = node_config(dir.path(), 2525, "[queue]\nmin_free = \"lots\"");
    std::fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("min_free")).unwrap() + 1;
    let (ok, _, stderr) = magicmx(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains(&format!("{}:{line}: queue.min_free: invalid type", path.display())), "{stderr}");
}

#[test]
fn run_with_a_bad_config_fails_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[node]\nnice = \"low\"\n").unwrap();
    let (ok, _, stderr) = magicmx(&["run", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains(":2: node.nice: invalid type"), "{stderr}");
}

#[test]
fn a_second_node_on_the_same_data_directory_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let port = claim_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _first = NodeProcess::start(dir.path(), &node_config(dir.path(), port, ""), addr);
    let other = dir.path().join("second.toml");
    std::fs::write(&other, node_config(dir.path(), claim_port(), "")).unwrap();
    let (ok, _, stderr) = magicmx(&["run", "--config", other.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("cannot open the queue database") && stderr.contains("queue.redb"), "{stderr}");
}

#[test]
fn default_config_prints_the_embedded_default() {
    let (ok, stdout, _) = magicmx(&["default-config"]);
    assert!(ok);
    assert!(stdout.contains("127.0.0.1:2525") && stdout.contains("example.test"));
}
