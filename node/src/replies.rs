//! The throttle's replies, worded in one place: refusals at connect, over
//! the limit, too many connections, the trap. Each says why and, where the
//! sender can do something about it, when to come back.

use magicmx_proto::smtp::Reply;
use magicmx_proto::SourceBlock;
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

/// A penalised block at connect: `421 4.7.0`, with when to come back.
pub(crate) fn penalised(block: SourceBlock, until_ms: u64, now_ms: u64) -> Reply {
    let minutes = until_ms.saturating_sub(now_ms).div_ceil(60_000);
    let text = format!(
        "Too much mail from your network {block}; come back after {} (in {minutes} min)",
        when(until_ms)
    );
    Reply::new(421, "4.7.0", text)
}

/// A recipient or a message over the block's mesh-wide limit: `451 4.7.1`
/// (the sender keeps the message).
pub(crate) fn over_recipient_limit(block: SourceBlock, limit: f64, until_ms: u64) -> Reply {
    let text = format!(
        "Too much mail from your network {block}: over {limit:.0} recipients an hour across this mesh; try again after {}",
        when(until_ms)
    );
    Reply::new(451, "4.7.1", text)
}

/// Every connection slot, or this address's, is taken: `421 4.7.0`.
pub(crate) fn too_many_connections(hostname: &str) -> Reply {
    Reply::new(421, "4.7.0", format!("{hostname} Error: too many connections, try again later"))
}

/// What the trap says before it closes.
pub(crate) fn trap_closing() -> Reply {
    Reply::new(421, "4.7.0", "Service not available, closing transmission channel")
}

/// A time for a reply or a log: RFC 2822 date, UTC.
pub(crate) fn when(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| t.format(&Rfc2822).ok())
        .unwrap_or_else(|| "later".into())
}
