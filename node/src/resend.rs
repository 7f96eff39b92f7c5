//! Recognising a message sent again because its 250 was lost (RFC 1047).
//!
//! A message is on disk before the node says 250; if the node dies (or the
//! connection breaks) between the commit and the reply, the client never hears
//! the 250 and, rightly, sends the message again. To keep that from becoming a
//! duplicate, every message is noted as *unanswered* in the same commit that
//! stores it, and the note is dropped once the 250 is written. A message that
//! arrives with the same fingerprint as an unanswered one (same envelope
//! sender, same recipients, same bytes, including a `Message-ID:`) is the
//! client's second try: it gets the first copy's 250 and is not queued again.
//! Messages without a `Message-ID:` are never taken for one another.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::digest;
use magicmx_proto::smtp::Message;

use crate::error::Result;
use crate::queue::{Queue, QueueId, Unanswered};

/// How long an unanswered message is remembered: as long as a sending MTA
/// keeps retrying (Postfix's `maximal_queue_lifetime`).
pub const REMEMBER_SECS: u64 = 5 * 24 * 3600;

/// SHA-256 over the envelope and the SHA-256 of the content as the client
/// sent it (`content`, taken while it was written to the spool); `None`
/// when the header has no `Message-ID:`, since byte-identical messages
/// without one (load generators, scripts) may well be distinct messages.
pub fn fingerprint(message: &Message, content: &[u8; 32]) -> Option<[u8; 32]> {
    if !message.has_message_id {
        return None;
    }
    let mut hash = digest::Context::new(&digest::SHA256);
    let sender = message.sender.as_ref().map(ToString::to_string).unwrap_or_default();
    hash.update(sender.as_bytes());
    for recipient in &message.recipients {
        hash.update(b"\0");
        hash.update(recipient.to_string().as_bytes());
    }
    hash.update(b"\n");
    hash.update(content);
    hash.finish().as_ref().try_into().ok()
}

/// Unanswered messages remembered at most. Each is a message queued whose
/// client went away before its 250, so a stranger can make many; past the
/// cap the oldest eighth are forgotten (a second try of one of those is
/// queued again: a duplicate, never a loss).
pub const MAX_NOTES: usize = 100_000;

/// The unanswered messages a second try may match, by fingerprint, with
/// when each arrived (Unix seconds).
#[derive(Default)]
pub struct UnansweredMessages {
    by_fingerprint: Mutex<HashMap<[u8; 32], (QueueId, u64)>>,
}

impl UnansweredMessages {
    /// Reads what the queue holds as unanswered (left by an earlier run that
    /// died, or by clients that went away before their 250); forgets the
    /// ones older than [`REMEMBER_SECS`].
    pub fn load(queue: &Queue, now: u64) -> Result<UnansweredMessages> {
        let by_fingerprint = queue
            .unanswered()?
            .into_iter()
            .map(|(id, Unanswered { fingerprint, arrived })| (fingerprint, (id, arrived)))
            .collect();
        let unanswered = UnansweredMessages { by_fingerprint: Mutex::new(by_fingerprint) };
        unanswered.forget_old(queue, now);
        let count = unanswered.by_fingerprint.lock().unwrap().len();
        if count > 0 {
            tracing::info!(
                count,
                "messages whose 250 may have been lost; a second try of one is not queued again"
            );
        }
        Ok(unanswered)
    }

    /// Notes a message whose 250 could not be written; at [`MAX_NOTES`],
    /// forgets the oldest eighth here and in `queue` first.
    pub fn remember(&self, queue: &Queue, fingerprint: [u8; 32], id: QueueId, arrived: u64) {
        let mut notes = self.by_fingerprint.lock().unwrap();
        if notes.len() >= MAX_NOTES {
            let mut by_age: Vec<([u8; 32], QueueId, u64)> =
                notes.iter().map(|(fp, &(id, arrived))| (*fp, id, arrived)).collect();
            by_age.sort_unstable_by_key(|&(_, _, arrived)| arrived);
            for (fp, id, _) in by_age.into_iter().take(MAX_NOTES / 8) {
                notes.remove(&fp);
                queue.answered(id);
            }
        }
        notes.insert(fingerprint, (id, arrived));
    }

    /// Messages remembered as unanswered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_fingerprint.lock().unwrap().len()
    }

    /// The unanswered message this one repeats, taken off the list.
    pub fn claim(&self, fingerprint: &[u8; 32]) -> Option<QueueId> {
        self.by_fingerprint.lock().unwrap().remove(fingerprint).map(|(id, _)| id)
    }

    /// Forgets, here and in the queue, the ones older than [`REMEMBER_SECS`].
    pub fn forget_old(&self, queue: &Queue, now: u64) {
        self.by_fingerprint.lock().unwrap().retain(|_, &mut (id, arrived)| {
            let keep = now.saturating_sub(arrived) <= REMEMBER_SECS;
            if !keep {
                queue.answered(id);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use magicmx_proto::Address;

    /// The fingerprint of `content` to `recipients`, its `Message-ID:`
    /// seen as the session sees it (proto's dialogue tests hold that rule).
    fn print(content: &str, recipients: &[&str]) -> Option<[u8; 32]> {
        let message = Message {
            helo: "client.test".into(),
            sender: Some(Address::parse("alice@client.test").unwrap()),
            recipients: recipients.iter().map(|r| Address::parse(r).unwrap()).collect(),
            size: content.len(),
            has_message_id: content.contains("Message-ID:"),
            eight_bit: false,
            smtputf8: false,
            eight_bit_mime: false,
            tls: false,
            esmtp: true,
        };
        let digest = digest::digest(&digest::SHA256, content.as_bytes());
        fingerprint(&message, digest.as_ref().try_into().unwrap())
    }

    const WITH_ID: &str = "Subject: hi\r\nMessage-ID: <1@client.test>\r\n\r\nbody\r\n";

    #[test]
    fn the_same_message_sent_again_has_the_same_fingerprint() {
        let first = print(WITH_ID, &["bob@example.test"]);
        assert!(first.is_some());
        assert_eq!(first, print(WITH_ID, &["bob@example.test"]));
    }

    #[test]
    fn another_recipient_or_other_bytes_make_another_fingerprint() {
        let first = print(WITH_ID, &["bob@example.test"]);
        assert_ne!(first, print(WITH_ID, &["carol@example.test"]));
        assert_ne!(first, print(WITH_ID, &["bob@example.test", "carol@example.test"]));
        let other = WITH_ID.replace("body", "Body");
        assert_ne!(first, print(&other, &["bob@example.test"]));
    }

    #[test]
    fn a_message_without_a_message_id_has_no_fingerprint() {
        assert!(print("Subject: hi\r\n\r\nbody\r\n", &["bob@example.test"]).is_none());
    }

    #[test]
    fn a_claimed_message_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let unanswered = UnansweredMessages::default();
        let print = print(WITH_ID, &["bob@example.test"]).unwrap();
        unanswered.remember(&queue, print, QueueId(7), 1_000);
        assert_eq!(unanswered.claim(&print), Some(QueueId(7)));
        assert_eq!(unanswered.claim(&print), None);
    }

    #[test]
    fn an_unanswered_message_is_remembered_for_five_days() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let unanswered = UnansweredMessages::default();
        let print = print(WITH_ID, &["bob@example.test"]).unwrap();
        unanswered.remember(&queue, print, QueueId(7), 1_000);
        unanswered.forget_old(&queue, 1_000 + REMEMBER_SECS);
        assert_eq!(unanswered.claim(&print), Some(QueueId(7)));
        unanswered.remember(&queue, print, QueueId(7), 1_000);
        unanswered.forget_old(&queue, 1_001 + REMEMBER_SECS);
        assert_eq!(unanswered.claim(&print), None);
    }

    #[test]
    fn a_million_unanswered_messages_leave_at_most_the_cap_and_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let unanswered = UnansweredMessages::default();
        let mut largest = 0;
        for n in 0..1_000_000u64 {
            let mut fp = [0u8; 32];
            fp[..8].copy_from_slice(&n.to_le_bytes());
            unanswered.remember(&queue, fp, QueueId(n), n);
            largest = largest.max(unanswered.len());
        }
        assert_eq!(largest, MAX_NOTES);
        let mut newest = [0u8; 32];
        newest[..8].copy_from_slice(&999_999u64.to_le_bytes());
        assert_eq!(unanswered.claim(&newest), Some(QueueId(999_999)));
        let mut oldest = [0u8; 32];
        oldest[..8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(unanswered.claim(&oldest), None, "the oldest went first");
    }
}
