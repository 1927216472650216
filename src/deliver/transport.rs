//! The TCP link of the workers' ureq connector chain, in place of ureq's own: the
//! same sockets, fewer system calls per callback.
//!
//! The burst benchmark (`make bench`) showed each callback costing about ten system
//! calls with ureq's `TcpTransport`, where a keep-alive request needs two:
//!
//! - ureq writes a request's head and body with a write each. With TCP_NODELAY that
//!   is two segments, and the endpoint wakes up for each. Here what ureq transmits
//!   is held until it first reads, and goes out in one write.
//! - It checks a pooled connection twice per request (when it is returned and when
//!   it is taken again) by switching the socket to non-blocking, reading, and
//!   switching back: three calls each. Here one `recv(MSG_PEEK | MSG_DONTWAIT)`.
//! - It sets the socket's send and receive timeouts before every write and read,
//!   since the time left changes. Here the write is tried without blocking first,
//!   and the receive timeout is only lowered when it would outlast the time left;
//!   a receive timeout that fires early is set again from the time left and the
//!   read retried, so a call still ends on its deadline and not before.
//!
//! Under TLS, rustls is the next link and uses this one for its records.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ureq::Error;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
};

/// Held output is written once it reaches this size, so a large body is not copied
/// whole before it goes out.
const HOLD_AT_MOST: usize = 64 * 1024;

/// The receive timeout is set in steps of this much below the time left, so that
/// consecutive calls on one connection find it low enough and leave it alone.
const TIMEOUT_STEP: Duration = Duration::from_millis(100);

/// Opens the TCP connection, unless an earlier link (a CONNECT proxy) already did.
#[derive(Debug, Default)]
pub struct Tcp;

impl<In: Transport> Connector<In> for Tcp {
    type Out = Either<In, Socket>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        if let Some(proxied) = chained {
            return Ok(Some(Either::A(proxied)));
        }
        let left = time_left(details.timeout)?;
        let stream = connect(&details.addrs, left, details.timeout)?;
        stream.set_nodelay(true)?;
        let config = details.config;
        Ok(Some(Either::B(Socket {
            stream,
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
            held: Vec::new(),
            read_timeout: None,
        })))
    }
}

/// Tries the resolved addresses in order. One that refuses or cannot be routed to
/// gives way to the next; each address but the last gets half the time left.
fn connect(
    addrs: &[SocketAddr],
    left: Option<Duration>,
    timeout: NextTimeout,
) -> Result<TcpStream, Error> {
    let started = Instant::now();
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        let per_addr = left.map(|total| {
            let remaining = total.saturating_sub(started.elapsed());
            let share = if i + 1 < addrs.len() {
                remaining / 2
            } else {
                remaining
            };
            share.max(Duration::from_millis(10))
        });
        let result = match per_addr {
            Some(t) => TcpStream::connect_timeout(addr, t),
            None => TcpStream::connect(addr),
        };
        match result {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
                last = Some(Error::Timeout(timeout.reason));
            }
            Err(e) if addr_specific(&e) => last = Some(e.into()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(ErrorKind::ConnectionRefused, "no address to connect to").into()
    }))
}

/// A failure that concerns this address only: the next one may still answer.
fn addr_specific(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::NetworkDown
            | ErrorKind::AddrNotAvailable
    )
}

/// A connected socket whose output waits in `held` until the next read.
#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    buffers: LazyBuffers,
    held: Vec<u8>,
    /// The receive timeout the socket has now (`None`: none set yet).
    read_timeout: Option<Duration>,
}

impl Socket {
    /// Writes what is held: without blocking first, which on a keep-alive connection
    /// takes it all; then blocking, under the write timeout.
    fn flush(&mut self, timeout: NextTimeout) -> Result<(), Error> {
        if self.held.is_empty() {
            return Ok(());
        }
        let timeout = timeout.for_write();
        let mut from = send_now(&self.stream, &self.held)?;
        if from < self.held.len() {
            self.stream.set_write_timeout(time_left(timeout)?)?;
            while from < self.held.len() {
                match (&self.stream).write(&self.held[from..]) {
                    Ok(0) => return Err(io::Error::from(ErrorKind::WriteZero).into()),
                    Ok(n) => from += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if timed_out(&e) => return Err(Error::Timeout(timeout.reason)),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.held.clear();
        Ok(())
    }

    /// Makes sure a blocking read cannot outlast `left`, touching the socket only
    /// when the timeout it has could.
    fn limit_read(&mut self, left: Duration) -> io::Result<()> {
        if self.read_timeout.is_some_and(|set| set <= left) {
            return Ok(());
        }
        // A step below the time left, so the next calls find it low enough; reads
        // that time out early are retried with what is left.
        let set = left
            .checked_sub(TIMEOUT_STEP)
            .filter(|d| !d.is_zero())
            .unwrap_or(left);
        self.stream.set_read_timeout(Some(set))?;
        self.read_timeout = Some(set);
        Ok(())
    }
}

impl Transport for Socket {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        // ureq reuses the output buffer for the next write: copy out now.
        self.held
            .extend_from_slice(&self.buffers.output()[..amount]);
        if self.held.len() >= HOLD_AT_MOST {
            self.flush(timeout)?;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.flush(timeout)?;
        let timeout = timeout.for_read();
        let deadline = time_left(timeout)?.map(|left| Instant::now() + left);
        if deadline.is_none() && self.read_timeout.is_some() {
            self.stream.set_read_timeout(None)?;
            self.read_timeout = None;
        }
        loop {
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout(timeout.reason));
                }
                self.limit_read(left)?;
            }
            let input = self.buffers.input_append_buf();
            match (&self.stream).read(input) {
                Ok(n) => {
                    self.buffers.input_appended(n);
                    return Ok(n > 0);
                }
                // Timed out early (the timeout was set a step low) or a signal:
                // the loop sets it from what is left.
                Err(e) if timed_out(&e) && deadline.is_some() => {
                    self.read_timeout = None;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn is_open(&mut self) -> bool {
        // Open means: nothing unsent, no byte waiting (a byte after a finished
        // response means the response was not what it claimed), not closed.
        self.held.is_empty() && peek(&self.stream) == Peek::Nothing
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

/// The time left before `timeout` (`None`: it never comes), or its error when
/// there is none left.
fn time_left(timeout: NextTimeout) -> Result<Option<Duration>, Error> {
    if timeout.after.is_zero() {
        return Err(Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|left| *left))
}

/// Sends as much of `bytes` as the socket takes without blocking.
fn send_now(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe `bytes`, which outlives the call.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            ErrorKind::WouldBlock => return Ok(0),
            ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Peek {
    Nothing,
    Bytes,
    Closed,
}

/// Looks at the socket without taking anything from it or blocking.
fn peek(stream: &TcpStream) -> Peek {
    let mut byte = [0u8; 1];
    // SAFETY: the pointer and length describe `byte`, which outlives the call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Peek::Closed,
        n if n > 0 => Peek::Bytes,
        _ if io::Error::last_os_error().kind() == ErrorKind::WouldBlock => Peek::Nothing,
        _ => Peek::Closed,
    }
}
