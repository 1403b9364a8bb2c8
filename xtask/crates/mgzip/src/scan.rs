//! The scanner: reads the next members whose headers claim sizes within
//! the caps and budgets into a job for the workers, or says why not (the
//! next member is for the serial decoder, or the jobs in flight must finish
//! first). Nothing it reads is trusted: a claim that does not hold is given
//! back to the input untouched.

use std::io::Read;
use std::sync::Arc;

use super::input::Segment;
use super::member::{Header, HeaderParser};
use super::pool::Span;
use super::{
    ParallelGzDecoder, BATCH, MAX_PARALLEL_MEMBER, MAX_PEEK, OUT_BUFFERS, PIECE, RAW_BUDGET,
};

impl<R: Read> ParallelGzDecoder<R> {
    /// Reads the next members into a job, or says why not. `busy`: jobs are
    /// in flight, so budgets apply (a lone job may exceed them).
    pub(super) fn scan_job(&mut self, busy: bool) -> Scan {
        let mut raw = self.spare_raw.pop().unwrap_or_default();
        raw.clear();
        let mut spans: Vec<Span> = Vec::new();
        let mut out_need = 0u64;
        let first = self.next_member;
        loop {
            let budgeted = busy || !spans.is_empty();
            match self.next_span(&mut raw, budgeted, out_need, !spans.is_empty()) {
                Next::Span(span) => {
                    out_need += u64::from(span.isize);
                    spans.push(span);
                    // A member in pieces is a job of its own.
                    if raw.len() >= BATCH || in_pieces(span.isize) {
                        break;
                    }
                }
                Next::NotParallel if spans.is_empty() => return Scan::Serial,
                Next::OverBudget if spans.is_empty() => return Scan::Later,
                Next::NotParallel | Next::OverBudget => break,
            }
        }
        self.next_member = first + spans.len() as u64;
        Scan::Job {
            raw: Arc::new(raw),
            members: Members {
                first,
                pieces: spans.len() == 1 && in_pieces(spans[0].isize),
                spans,
            },
        }
    }

    /// Reads the next member into `raw` if its header claims a size within
    /// the caps and the budgets (when `budgeted`) and, when `batching` onto
    /// earlier members, the job's output limit; consumes nothing otherwise.
    fn next_span(
        &mut self,
        raw: &mut Vec<u8>,
        budgeted: bool,
        out_need: u64,
        batching: bool,
    ) -> Next {
        let Some(h) = self.peek_header() else {
            return Next::NotParallel;
        };
        let totals = h
            .claim
            .map(|c| c.totals(h.len as usize))
            .unwrap_or_default();
        let Some(&total) = totals.first() else {
            return Next::NotParallel;
        };
        if total > MAX_PARALLEL_MEMBER {
            return Next::NotParallel;
        }
        if budgeted && self.raw_in_flight + raw.len() as u64 + total > RAW_BUDGET {
            return Next::OverBudget;
        }
        let start = raw.len();
        if raw.capacity() < start + total as usize {
            raw.reserve_exact(BATCH.max(start + total as usize) - start);
        }
        if self.input().read_into(raw, total as usize) < total as usize {
            // It claims more than is there: the serial decoder will tell.
            self.unread_tail(raw, start);
            return Next::NotParallel;
        }
        let mut end = start + total as usize;
        if !self.input().at_boundary() {
            // Python's mgzip stores the deflate data's size, not the total.
            if let Some(&alt) = totals.get(1).filter(|&&t| t <= MAX_PARALLEL_MEMBER) {
                let more = (alt - total) as usize;
                if self.input().read_into(raw, more) == more && self.input().at_boundary() {
                    end = start + alt as usize;
                } else {
                    self.unread_tail(raw, end);
                }
            }
        }
        let isize = u32::from_le_bytes([raw[end - 4], raw[end - 3], raw[end - 2], raw[end - 1]]);
        // A batch shares one buffer; a new job takes one, or two in pieces.
        let over = if batching {
            out_need + u64::from(isize) > PIECE as u64
        } else {
            let bufs = 1 + u64::from(in_pieces(isize));
            budgeted && self.bufs_in_flight + bufs > OUT_BUFFERS
        };
        if over {
            self.unread_tail(raw, start);
            return Next::OverBudget;
        }
        Next::Span(Span {
            start,
            header: h.len as usize,
            end,
            isize,
        })
    }

    /// Gives back `raw[from..]` to the input.
    fn unread_tail(&mut self, raw: &mut Vec<u8>, from: usize) {
        let tail = raw.split_off(from);
        if !tail.is_empty() {
            let end = tail.len();
            self.input().push_front(vec![Segment {
                data: Arc::new(tail),
                start: 0,
                end,
            }]);
        }
    }

    /// The next member's header, parsed in place (not consumed); `None` at
    /// the end, on garbage, or for headers longer than `MAX_PEEK`.
    fn peek_header(&mut self) -> Option<Header> {
        let mut want = 64;
        loop {
            let data = self.input().peek(want);
            if data.is_empty() {
                return None;
            }
            match HeaderParser::new().feed(data) {
                Ok((_, Some(h))) => return Some(h),
                Ok((_, None)) if data.len() == want && want < MAX_PEEK => {
                    want = (want * 16).min(MAX_PEEK);
                }
                _ => return None,
            }
        }
    }
}

enum Next {
    Span(Span),
    /// Not for a worker: no usable claim, too big, or the end.
    NotParallel,
    /// Would exceed a budget: wait until jobs in flight are done.
    OverBudget,
}

pub(super) enum Scan {
    Job {
        raw: Arc<Vec<u8>>,
        members: Members,
    },
    /// The next member is for the serial decoder.
    Serial,
    /// Over budget: wait until jobs in flight are done.
    Later,
}

pub(super) struct Members {
    pub(super) first: u64,
    pub(super) spans: Vec<Span>,
    pub(super) pieces: bool,
}

/// Whether a member of this ISIZE is inflated and handed on in pieces.
fn in_pieces(isize: u32) -> bool {
    isize as usize > PIECE
}
