//! The open-relay battery: every trick for getting a relay to pass mail to a
//! domain it does not serve. None may be taken for anywhere but a served
//! domain, and nothing may leave but to the served domain's route.

use std::time::Duration;

use magicmx_tests::{python, specs, wait_for_maildir_files};

/// Sends each RCPT TO argument verbatim (after one MAIL) and prints the codes.
const PROBE: &str = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), source_address=("127.0.98.1", 0), timeout=10)
s.ehlo("client.test")
for path in sys.argv[2:]:
    s.docmd("RSET")
    s.docmd("MAIL FROM:<alice@client.test>")
    code, text = s.docmd("RCPT TO:" + path)
    print(code, path, text.decode())
    if code == 250:
        code, text = s.docmd("DATA")
        if code == 354:
            s.send(("Subject: probe %s\r\n\r\nprobe\r\n.\r\n" % path).encode())
            code, text = s.getreply()
        print("DATA", code, path)
s.quit()
"#;

#[test]
fn no_trick_relays_mail_to_a_domain_not_served() {
    let root = tempfile::tempdir().unwrap();
    let spec = specs(root.path(), 1, false, "recipients_per_hour = 1000").remove(0);
    let node = spec.start();
    let refused = [
        "<victim@elsewhere.test>",
        "<VICTIM@ELSEWHERE.TEST>",
        "<victim@elsewhere.test.>",
        "<victim%elsewhere.test@example.test>",
        "<elsewhere.test!victim@example.test>",
        "<\"victim@elsewhere.test\"@example.test>",
        "<@example.test:victim@elsewhere.test>",
        "<@a.test,@example.test:victim@elsewhere.test>",
        "<victim@[127.0.0.1]>",
        "<victim@[IPv6:::1]>",
        "<victim@elsewhere.test@example.test>",
        "<victim@example.test.elsewhere.test>",
        "<victim@sub.example.test>",
        "<victim@example.test@>",
        "<>",
    ];
    // Served: taken, however written (the route goes to example.test's own route).
    let served = [
        "<bob@example.test>",
        "<BOB@EXAMPLE.TEST>",
        "<bob@example.test.>",
        "<@elsewhere.test:bob@example.test>",
    ];
    let mut args = vec![spec.smtp.to_string()];
    args.extend(refused.iter().chain(served.iter()).map(|s| s.to_string()));
    let out = python(PROBE, &args.iter().map(String::as_str).collect::<Vec<_>>());
    for path in refused {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(path))
            .unwrap_or_else(|| panic!("{path}: {out}"));
        let code: u16 = line.split_whitespace().next().unwrap().parse().unwrap();
        assert!(code >= 500, "{path} must be refused, got: {line}");
    }
    for path in served {
        assert!(out.contains(&format!("DATA 250 {path}")), "{path} is for a served domain: {out}");
    }
    // Every accepted message went to example.test's own maildir, and nowhere else.
    let files = wait_for_maildir_files(&spec.maildir(), "bob", served.len(), Duration::from_secs(10));
    assert_eq!(files.len(), served.len(), "{}", node.log_text());
    let mailboxes: Vec<String> = std::fs::read_dir(spec.maildir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(mailboxes, vec!["bob".to_string()], "no other mailbox was written");
}
