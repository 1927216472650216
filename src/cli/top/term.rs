//! The terminal, by hand: raw mode through termios, the alternate screen and the cursor
//! through ANSI sequences, the size by `TIOCGWINSZ`. No terminal library: ratatui with
//! crossterm added 217 KB to the static binary before any of this view's own code,
//! past its 3.5 MiB budget, and a full-screen table needs only these few calls.
//!
//! The terminal is given back however the view ends: `Screen`'s drop (a return, `q`,
//! Ctrl-C), the panic hook (before the panic message is printed), and a stop signal
//! (the view polls a flag and returns).

use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The settings before raw mode, while it is on: whoever restores first takes them.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);
/// Set by the panic hook, for the view to stop drawing when another thread panicked.
static PANICKED: AtomicBool = AtomicBool::new(false);

const ENTER: &str = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J";
const LEAVE: &str = "\x1b[0m\x1b[?25h\x1b[?1049l";

/// The terminal in raw mode on the alternate screen, until dropped.
pub struct Screen {
    _private: (),
}

impl Screen {
    pub fn enter() -> io::Result<Screen> {
        // SAFETY: tcgetattr fills the struct it is given; fd 0 is checked to be a tty.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // Keys one by one, unechoed; Ctrl-C as a key (ISIG off), so that quitting goes
        // through the same clean-up as `q`; no flow control eating Ctrl-S.
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        raw.c_iflag &= !(libc::IXON | libc::ICRNL);
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        install_panic_hook();
        // SAFETY: a valid termios for fd 0.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) } != 0 {
            let e = io::Error::last_os_error();
            restore();
            return Err(e);
        }
        let mut out = io::stdout().lock();
        out.write_all(ENTER.as_bytes())?;
        out.flush()?;
        Ok(Screen { _private: () })
    }

    /// Replaces the screen with `frame` (already fitted to its size) in one write.
    pub fn draw(&self, frame: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(frame.as_bytes())?;
        out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen and puts the terminal's settings back; only the first
/// call does anything.
pub fn restore() {
    let Some(saved) = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let mut out = io::stdout().lock();
    let _ = out.write_all(LEAVE.as_bytes());
    let _ = out.flush();
    // SAFETY: the settings read from this terminal at the start.
    unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let earlier = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The message must land on the normal screen, in a cooked terminal.
            restore();
            PANICKED.store(true, Ordering::Relaxed);
            earlier(info);
        }));
    });
}

/// Whether a thread panicked (and the terminal was given back already).
pub fn panicked() -> bool {
    PANICKED.load(Ordering::Relaxed)
}

/// Columns and rows; 80×24 when the terminal does not say.
pub fn size() -> (usize, usize) {
    window().unwrap_or((80, 24))
}

/// Columns and rows of the terminal stdout is, when it is one and says.
pub fn window() -> Option<(usize, usize)> {
    // SAFETY: TIOCGWINSZ fills a winsize; on a pipe or a file it fails (ENOTTY).
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0 && ws.ws_row > 0).then(|| (usize::from(ws.ws_col), usize::from(ws.ws_row)))
}

/// Whether both stdin and stdout are a terminal.
pub fn is_terminal() -> bool {
    // SAFETY: isatty only looks at the descriptor.
    unsafe { libc::isatty(0) == 1 && libc::isatty(1) == 1 }
}

/// The bytes typed within `wait`, or none.
pub fn read_keys(wait: Duration) -> io::Result<Vec<u8>> {
    let mut fd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one pollfd, for fd 0.
    let ready = unsafe { libc::poll(&mut fd, 1, ms) };
    if ready < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::Interrupted => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    if ready == 0 {
        return Ok(Vec::new());
    }
    if fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
        && fd.revents & libc::POLLIN == 0
    {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the terminal went away",
        ));
    }
    let mut buf = [0u8; 256];
    // SAFETY: reads into a buffer of its length.
    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
    match n {
        n if n > 0 => Ok(buf[..n as usize].to_vec()),
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the terminal went away",
        )),
        _ => {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(Vec::new()),
                _ => Err(e),
            }
        }
    }
}
