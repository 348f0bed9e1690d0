//! Zero-downtime upgrade: a new berth takes the listening sockets of the
//! running one, so no connection is refused and no request fails while the
//! binary (or any setting) changes.
//!
//! `berth serve --upgrade` starts the successor: it checks its configuration,
//! waits on the upgrade socket in the state directory, and sends SIGQUIT to
//! the berth named by the pid file there. The running berth hands over its
//! HTTP and HTTPS listeners (Pingora's graceful upgrade), goes on serving
//! beside the new one for a few seconds, then stops accepting, answers what it
//! has in flight and exits. The admin API and DNS sockets are bound with
//! `SO_REUSEPORT`, so both processes hold them during the hand-over. Requests
//! that reach the new berth before it has listed the containers wait for it
//! (`proxy.startup_hold`). `berth upgrade` runs the successor in the
//! background and returns once it has taken over: the command for
//! `systemctl reload` (see `examples/berth.service`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{info, warn};

use crate::private::write_private;

/// Seconds the old berth keeps accepting beside the new one after the hand-over
/// (Pingora's `CLOSE_TIMEOUT`).
pub const HANDOVER: Duration = Duration::from_secs(5);

pub fn pid_file(state: &Path) -> PathBuf {
    state.join("berth.pid")
}

pub fn upgrade_sock(state: &Path) -> PathBuf {
    state.join("upgrade.sock")
}

/// Records this process as the running berth.
pub fn write_pid(state: &Path) -> Result<(), String> {
    let file = pid_file(state);
    write_private(&file, format!("{}\n", std::process::id()).as_bytes())
        .map_err(|e| format!("{}: {e}", file.display()))
}

/// The pid in the pid file, if the file is there and holds one.
pub fn read_pid(state: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file(state))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .filter(|&p: &i32| p > 0)
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// The running berth to take over from: an error names the pid file.
pub fn running_pid(state: &Path) -> Result<i32, String> {
    let file = pid_file(state);
    match read_pid(state) {
        Some(pid) if pid as u32 == std::process::id() => Err(format!(
            "{}: names this process: nothing to take over",
            file.display()
        )),
        Some(pid) if alive(pid) => Ok(pid),
        Some(pid) => Err(format!(
            "{}: berth {pid} is not running: start berth without --upgrade",
            file.display()
        )),
        None => Err(format!(
            "{}: no pid file: is berth running with this state directory? (start it without --upgrade)",
            file.display()
        )),
    }
}

/// Once the new server listens on the upgrade socket, asks the old berth to
/// hand over (SIGQUIT). Runs in its own thread: Pingora's bootstrap blocks
/// while it waits for the sockets.
pub fn ask_for_listeners(sock: PathBuf, old: i32) {
    let _ = std::fs::remove_file(&sock);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if Instant::now() > deadline {
                warn!(sock = %sock.display(), "the upgrade socket never appeared");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Bound before it listens: give it a moment (the old berth retries
        // a refused connection after a second anyway).
        std::thread::sleep(Duration::from_millis(50));
        info!(old, "asking the running berth for its listeners (SIGQUIT)");
        // SAFETY: sends a signal; no memory is involved.
        unsafe {
            libc::kill(old, libc::SIGQUIT);
        }
    });
}

/// A TCP listener that the next berth can bind too while this one runs.
pub fn shared_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// A UDP socket that the next berth can bind too while this one runs.
pub fn shared_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Tells systemd (`Type=notify`) that this process is the service's main
/// process and ready; nothing without `$NOTIFY_SOCKET`.
pub fn notify_systemd() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let msg = format!("MAINPID={}\nREADY=1\n", std::process::id());
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => return warn!(error = %e, "systemd notification not sent"),
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), Path::new(&path))
    };
    if let Err(e) = sent {
        warn!(error = %e, "systemd notification not sent");
    }
}

/// `berth upgrade`: starts `berth serve --upgrade` from the binary on disk in
/// the background and waits until it has taken over (the pid file names it)
/// or has failed. The new berth logs where the old one did (inherited
/// stdout/stderr).
pub fn run_upgrade(config: Option<&Path>, state: &Path, wait: Duration) -> Result<u32, String> {
    let old = running_pid(state)?;
    let exe = std::env::current_exe().map_err(|e| format!("which binary to start: {e}"))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("serve").arg("--upgrade");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.stdin(Stdio::null());
    // Its output goes with the log (stderr): this command's stdout is for
    // its own answer, and whoever reads it must see it end.
    if let Ok(err) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() {
        cmd.stdout(Stdio::from(err));
    }
    // Its own process group: not stopped with this command's session.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: cannot start: {e}", exe.display()))?;
    let pid = child.id();
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the new berth ({}) exited with {status} before taking over; berth {old} goes on serving",
                exe.display()
            ));
        }
        if read_pid(state) == Some(pid as i32) {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the new berth (pid {pid}) has not taken over after {wait:?}; see its log"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
