//! Low priority: a node is meant to run on spare hardware without getting in
//! the way. At start-up it lowers its CPU priority to `node.nice` and, where
//! Linux allows, its I/O priority to the idle class.

/// Applies `nice` (−20…19) to the whole process; says what it did.
pub fn lower(nice: i32) -> String {
    let mut done = vec![];
    // SAFETY: setpriority only reads its integer arguments.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice.clamp(-20, 19)) };
    done.push(if result == 0 {
        format!("nice {nice}")
    } else {
        format!("nice {nice} not applied ({})", std::io::Error::last_os_error())
    });
    #[cfg(target_os = "linux")]
    {
        // ioprio_set(IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << 13)
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        // SAFETY: the syscall takes three integers and touches no memory of ours.
        let result =
            unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << 13) };
        done.push(if result == 0 { "idle I/O class".into() } else { "I/O class unchanged".into() });
    }
    done.join(", ")
}
