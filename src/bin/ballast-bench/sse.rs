//! A minimal incremental reader of a `text/event-stream` body: it yields
//! the `data` of each complete event and ignores everything else (`id`,
//! `event`, `retry`, comments). Events without data (priming events,
//! keep-alives) are not yielded.
//!
//! Lines end in LF or CRLF; a lone CR as line end (allowed by the SSE spec,
//! used by no MCP server we know) is not recognised. One event may not hold
//! more than [`MAX_EVENT_BYTES`], so a broken server cannot grow the buffer
//! without bound.

/// Most bytes one event (and the unread buffer) may hold.
pub(crate) const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The event stream was larger than [`MAX_EVENT_BYTES`] without an event end.
#[derive(Debug, thiserror::Error)]
#[error("an SSE event is larger than {MAX_EVENT_BYTES} bytes")]
pub(crate) struct EventTooLarge;

/// Parses SSE bytes as they arrive, chunk by chunk.
#[derive(Debug, Default)]
pub(crate) struct SseReader {
    /// Received bytes not yet split into lines.
    buf: Vec<u8>,
    /// Where the first unread line starts in `buf`.
    pos: usize,
    /// The data lines of the event being read, joined with LF.
    data: Vec<u8>,
    /// Whether `data` has had a line (so the next one is preceded by LF).
    has_data: bool,
    /// Whether `data` was handed out and must be cleared first.
    dispatched: bool,
}

// === impl SseReader ===

impl SseReader {
    /// Adds received bytes.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), EventTooLarge> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.len() + self.data.len() + chunk.len() > MAX_EVENT_BYTES {
            return Err(EventTooLarge);
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The data of the next complete event in what was pushed, if any.
    pub(crate) fn next_event(&mut self) -> Option<&[u8]> {
        if self.dispatched {
            self.data.clear();
            self.has_data = false;
            self.dispatched = false;
        }
        while let Some(len) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
            let start = self.pos;
            self.pos += len + 1;
            let mut line = &self.buf[start..start + len];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                if self.data.is_empty() {
                    self.has_data = false;
                    continue;
                }
                self.dispatched = true;
                return Some(&self.data);
            }
            if let Some(value) = line.strip_prefix(b"data") {
                let value = match value {
                    [] => value,
                    [b':', b' ', rest @ ..] | [b':', rest @ ..] => rest,
                    _ => continue, // a field named e.g. `database`
                };
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&str]) -> Vec<String> {
        let mut r = SseReader::default();
        let mut out = Vec::new();
        for c in chunks {
            r.push(c.as_bytes()).unwrap();
            while let Some(d) = r.next_event() {
                out.push(String::from_utf8(d.to_vec()).unwrap());
            }
        }
        out
    }

    #[test]
    fn priming_comments_and_fields_are_skipped() {
        let stream = "id: 1\nretry: 1000\ndata:\n\n: keep-alive\n\nid: 2\nevent: message\ndata: {\"id\":1}\n\n";
        assert_eq!(events(&[stream]), [r#"{"id":1}"#]);
    }

    #[test]
    fn split_anywhere_and_crlf() {
        let stream = "data: {\"a\":\r\ndata:1}\r\n\r\ndata:x\n\n";
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(events(&[a, b]), ["{\"a\":\n1}", "x"], "cut at {cut}");
        }
    }

    #[test]
    fn unfinished_event_is_not_yielded() {
        assert!(events(&["data: {}\n"]).is_empty());
    }

    #[test]
    fn oversized_event_is_refused() {
        let mut r = SseReader::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(r.push(&big).is_err());
    }
}
