//! One write per request: a link in ureq's connector chain that holds what ureq
//! transmits until it waits for the answer.
//!
//! ureq sends a request's head and its body with a write each. On a keep-alive
//! connection with TCP_NODELAY that is two segments, and the endpoint wakes up for
//! each: the burst benchmark measured this as the largest cost per callback. Holding
//! the bytes until ureq first reads sends them in one write. Under TLS the link sits
//! below rustls, so the handshake and the records go out the same way.

use ureq::Error;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// Wraps the transport the previous link made.
#[derive(Debug, Default)]
pub struct OneWrite;

impl<In: Transport> Connector<In> for OneWrite {
    type Out = Held<In>;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        Ok(chained.map(|inner| Held {
            inner,
            held: Vec::new(),
        }))
    }
}

/// A transport whose output waits in `held` until the next read.
#[derive(Debug)]
pub struct Held<T> {
    inner: T,
    held: Vec<u8>,
}

impl<T: Transport> Held<T> {
    fn flush(&mut self, timeout: NextTimeout) -> Result<(), Error> {
        let mut from = 0;
        while from < self.held.len() {
            let out = self.inner.buffers().output();
            let n = out.len().min(self.held.len() - from);
            out[..n].copy_from_slice(&self.held[from..from + n]);
            self.inner.transmit_output(n, timeout)?;
            from += n;
        }
        self.held.clear();
        Ok(())
    }
}

impl<T: Transport> Transport for Held<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, _timeout: NextTimeout) -> Result<(), Error> {
        // ureq reuses the output buffer for the next write: copy out now.
        let out = self.inner.buffers().output();
        self.held.extend_from_slice(&out[..amount]);
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.flush(timeout)?;
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.held.is_empty() && self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}
