//! Encoded answers by question, so that a repeated question costs a scan of its bytes, a
//! map lookup and a copy: no parse, no catalog read, no allocation. Pure; the caller
//! supplies the catalog's generation and the time.
//!
//! A cached reply was encoded for the query that missed; a hit copies it and writes in the
//! asker's id, RD and CD bits and question name (the same bytes but for letter case, DNS
//! 0x20). Entries live until the catalog changes or [`FRESH_MS`] pass (members going down
//! are seen within that); only NOERROR replies are kept, so a flood of random names cannot
//! push out the names in use. Several shuffles of a reply are kept and served in turn.

use std::collections::BTreeMap;

use super::rrl::{Kind, name_hash};
use super::wire::{CLASSIC_UDP, Fit, MAX_QUERY, Transport, UDP_PAYLOAD};

/// How long an entry answers (ms).
pub const FRESH_MS: u64 = 1000;
/// Bounds of the cache; past either it starts over.
const MAX_ENTRIES: usize = 4096;
const MAX_BYTES: usize = 16 << 20;
/// Longest key: 8 bytes of header and a name of at most 255.
pub const KEY_MAX: usize = 8 + 255;

/// Where a scanned query's question name lies (after the 12-byte header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// The key's length in the caller's buffer.
    pub key_len: usize,
    /// One past the question name's last byte.
    pub qname_end: usize,
}

/// The cache key of `packet` written into `key`, if it is a plain query the cache can
/// answer (one question, at most an EDNS0 OPT record, no name compression); `None` sends
/// it to the full parser.
pub fn scan(packet: &[u8], transport: Transport, key: &mut [u8; KEY_MAX]) -> Option<Scanned> {
    if packet.len() < 17 || packet.len() > MAX_QUERY {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([packet[i], packet[i + 1]]);
    // QR=0 and opcode QUERY; one question, no answers or authorities, at most one OPT.
    let plain = packet[2] & 0xf8 == 0 && count(4) == 1 && count(6) == 0 && count(8) == 0;
    let additional = count(10);
    if !plain || additional > 1 {
        return None;
    }
    let mut at = 12;
    let name_start = 8;
    let mut k = name_start;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            key[k] = 0;
            k += 1;
            at += 1;
            break;
        }
        if len > 63 || k + 1 + len >= KEY_MAX {
            return None; // a compression pointer or an over-long name
        }
        let label = packet.get(at + 1..at + 1 + len)?;
        key[k] = len as u8;
        for (d, s) in key[k + 1..k + 1 + len].iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        k += 1 + len;
        at += 1 + len;
    }
    let qname_end = at;
    let tail = packet.get(at..at + 4)?;
    at += 4;
    let (mut edns, mut payload) = (0u8, CLASSIC_UDP);
    if additional == 1 {
        // OPT: root name, type 41, class = payload size, TTL = rcode/version/flags, rdata.
        let opt = packet.get(at..at + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[6] != 0 {
            return None; // not OPT, or an EDNS version above 0 (BADVERS: the parser's)
        }
        payload = u16::from_be_bytes([opt[3], opt[4]]);
        let dnssec_ok = opt[7] & 0x80 != 0;
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        at += 11 + rdlen;
        edns = 1 | (u8::from(dnssec_ok) << 1);
    }
    if at != packet.len() {
        return None;
    }
    let limit = match (transport, edns) {
        (Transport::Tcp, _) => u16::MAX,
        (Transport::Udp, 0) => CLASSIC_UDP,
        (Transport::Udp, _) => payload.clamp(CLASSIC_UDP, UDP_PAYLOAD),
    };
    key[0] = u8::from(transport == Transport::Tcp);
    key[1] = edns;
    key[2..4].copy_from_slice(&limit.to_be_bytes());
    key[4..8].copy_from_slice(tail);
    Some(Scanned {
        key_len: k,
        qname_end,
    })
}

struct Entry {
    generation: u64,
    made_ms: u64,
    variants: Vec<Vec<u8>>,
    next: usize,
}

/// The cache itself.
#[derive(Default)]
pub struct AnswerCache {
    entries: BTreeMap<Box<[u8]>, Entry>,
    bytes: usize,
}

impl AnswerCache {
    /// Writes the reply to `packet` into `out` if a fresh one is cached.
    pub fn answer(
        &mut self,
        key: &[u8],
        scanned: Scanned,
        packet: &[u8],
        generation: u64,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(e) = self.entries.get_mut(key) else {
            return false;
        };
        if e.generation != generation || now_ms.saturating_sub(e.made_ms) >= FRESH_MS {
            return false;
        }
        let reply = &e.variants[e.next % e.variants.len()];
        e.next = e.next.wrapping_add(1);
        if reply.len() < scanned.qname_end {
            return false;
        }
        out.clear();
        out.extend_from_slice(reply);
        out[..2].copy_from_slice(&packet[..2]);
        out[2] = (out[2] & !0x01) | (packet[2] & 0x01); // RD as asked
        out[3] = (out[3] & !0x10) | (packet[3] & 0x10); // CD as asked
        out[12..scanned.qname_end].copy_from_slice(&packet[12..scanned.qname_end]);
        true
    }

    /// Keeps `variants` (NOERROR replies to one question) for `key`.
    pub fn keep(&mut self, key: &[u8], variants: Vec<Vec<u8>>, generation: u64, now_ms: u64) {
        let size = key.len() + variants.iter().map(Vec::len).sum::<usize>();
        if variants.is_empty() || size > MAX_BYTES / 16 {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES || self.bytes + size > MAX_BYTES {
            self.entries.clear();
            self.bytes = 0;
        }
        let entry = Entry {
            generation,
            made_ms: now_ms,
            variants,
            next: 0,
        };
        if let Some(old) = self.entries.insert(key.into(), entry) {
            self.bytes -= key.len() + old.variants.iter().map(Vec::len).sum::<usize>();
        }
        self.bytes += size;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The cached path, all of it but the socket: the reply to `packet` (scanned as `scanned`,
/// its key `key`) from `cache` into `out`, with what rate limiting and the counters need
/// (its RRL kind, whether it was truncated); `None` when nothing fresh is cached. Allocates
/// nothing once `out` has grown to the replies' size (`tests/dns_alloc.rs` counts).
pub fn answer_cached(
    cache: &mut AnswerCache,
    key: &[u8],
    scanned: Scanned,
    packet: &[u8],
    generation: u64,
    now_ms: u64,
    out: &mut Vec<u8>,
) -> Option<(Kind, Fit)> {
    if !cache.answer(key, scanned, packet, generation, now_ms, out) {
        return None;
    }
    let at = scanned.qname_end;
    let qtype = u16::from_be_bytes([packet[at], packet[at + 1]]);
    // Cached replies are NOERROR; a truncated one (TC) is still counted so.
    let fit = if out[2] & 0x02 != 0 {
        Fit::Truncated
    } else {
        Fit::Whole
    };
    Some((Kind::Answer(name_hash(&key[8..]), qtype), fit))
}

#[cfg(test)]
mod tests {
    use super::super::wire::query;
    use super::*;
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;

    fn scanned(packet: &[u8], t: Transport) -> Option<(Vec<u8>, Scanned)> {
        let mut key = [0u8; KEY_MAX];
        scan(packet, t, &mut key).map(|s| (key[..s.key_len].to_vec(), s))
    }

    #[test]
    fn keys_ignore_case_and_id_but_not_type_size_or_transport() {
        let a = query(
            1,
            &Name::from_str("Web.Shop.mpreg.").unwrap(),
            RecordType::A,
            None,
        );
        let b = query(
            2,
            &Name::from_str("web.shop.MPREG.").unwrap(),
            RecordType::A,
            None,
        );
        let (ka, sa) = scanned(&a, Transport::Udp).unwrap();
        let (kb, _) = scanned(&b, Transport::Udp).unwrap();
        assert_eq!(ka, kb);
        assert_eq!(sa.qname_end, a.len() - 4);
        let srv = query(
            1,
            &Name::from_str("web.shop.mpreg.").unwrap(),
            RecordType::SRV,
            None,
        );
        assert_ne!(scanned(&srv, Transport::Udp).unwrap().0, ka);
        let edns = query(
            1,
            &Name::from_str("web.shop.mpreg.").unwrap(),
            RecordType::A,
            Some(4096),
        );
        assert_ne!(scanned(&edns, Transport::Udp).unwrap().0, ka);
        assert_ne!(scanned(&a, Transport::Tcp).unwrap().0, ka);
    }

    #[test]
    fn odd_packets_go_to_the_parser() {
        let a = query(1, &Name::from_str("a.mpreg.").unwrap(), RecordType::A, None);
        let mut longer = a.clone();
        longer.push(0);
        assert!(scanned(&longer, Transport::Udp).is_none());
        let mut response = a.clone();
        response[2] |= 0x80;
        assert!(scanned(&response, Transport::Udp).is_none());
        assert!(scanned(&a[..10], Transport::Udp).is_none());
    }

    #[test]
    fn a_hit_is_the_stored_reply_with_the_askers_header_and_name() {
        let asked = query(
            7,
            &Name::from_str("web.mpreg.").unwrap(),
            RecordType::A,
            None,
        );
        let mut stored = asked.clone();
        stored[2] |= 0x80;
        let mut cache = AnswerCache::default();
        let (key, s) = scanned(&asked, Transport::Udp).unwrap();
        cache.keep(&key, vec![stored.clone()], 3, 100);
        let again = query(
            0x4242,
            &Name::from_str("WEB.mpreg.").unwrap(),
            RecordType::A,
            None,
        );
        let (key2, s2) = scanned(&again, Transport::Udp).unwrap();
        let mut out = Vec::new();
        assert!(cache.answer(&key2, s2, &again, 3, 200, &mut out));
        assert_eq!(&out[..2], &[0x42, 0x42]);
        assert_eq!(&out[12..s.qname_end], &again[12..s.qname_end]);
        assert!(
            !cache.answer(&key2, s2, &again, 4, 200, &mut out),
            "catalog changed"
        );
        assert!(
            !cache.answer(&key2, s2, &again, 3, 100 + FRESH_MS, &mut out),
            "stale"
        );
    }
}
