//! DNS messages in and out: a query's bytes to a question (or the reply that refuses it),
//! and an [`Answer`] to a reply's bytes within the size the transport allows. Pure.
//!
//! Every packet gets an answer unless it cannot be one (shorter than a header, or itself
//! a response: answering those would let two servers bounce packets forever): malformed
//! queries get FORMERR, other opcodes NOTIMP, other classes REFUSED, EDNS versions above 0
//! BADVERS (RFC 6891).

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::answer::Answer;

/// The most a UDP answer grows to, whatever a client offers (EDNS0): 1232 bytes avoids IP
/// fragmentation on any path (DNS flag day 2020), and it is what we advertise.
pub const UDP_PAYLOAD: u16 = 1232;
/// Without EDNS0 a UDP answer is at most 512 bytes (RFC 1035).
pub const CLASSIC_UDP: u16 = 512;
/// A query is a header and one question, with perhaps an OPT record: anything longer is
/// not a query we answer (and a UDP read buffer of this size holds any of them).
pub const MAX_QUERY: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A query worth resolving.
#[derive(Debug, Clone)]
pub struct Question {
    pub message: Message,
    pub query: Query,
    /// The most bytes the reply may have.
    pub limit: u16,
}

/// What to do with a packet.
#[derive(Debug)]
// `Ask` is large, but a `Parsed` lives on the stack for one query and is matched at once;
// boxing it would cost an allocation per query.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// Resolve it, then [`reply`].
    Ask(Question),
    /// Send these bytes (an error reply needing no lookup), whose full rcode (BADVERS
    /// lives partly in the OPT record, so it is not the header's four bits) is given.
    Reply(Vec<u8>, ResponseCode),
    /// Send nothing.
    Drop,
}

/// Reads a query under [`MAX_QUERY`].
pub fn parse(packet: &[u8], transport: Transport) -> Parsed {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return Parsed::Drop;
    }
    if packet.len() > MAX_QUERY {
        return Parsed::Reply(
            header_error(packet, ResponseCode::FormErr),
            ResponseCode::FormErr,
        );
    }
    let message = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => {
            return Parsed::Reply(
                header_error(packet, ResponseCode::FormErr),
                ResponseCode::FormErr,
            );
        }
    };
    let error = |code| Parsed::Reply(error_reply(&message, code), code);
    if message.op_code != OpCode::Query {
        return error(ResponseCode::NotImp);
    }
    let [query] = message.queries.as_slice() else {
        return error(ResponseCode::FormErr);
    };
    if message.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return error(ResponseCode::BADVERS);
    }
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return error(ResponseCode::Refused);
    }
    let limit = match (transport, &message.edns) {
        (Transport::Tcp, _) => u16::MAX,
        (Transport::Udp, Some(e)) => e.max_payload().clamp(CLASSIC_UDP, UDP_PAYLOAD),
        (Transport::Udp, None) => CLASSIC_UDP,
    };
    let query = query.clone();
    Parsed::Ask(Question {
        message,
        query,
        limit,
    })
}

/// A reply echoing the header of a packet that could not be read, with no sections.
fn header_error(packet: &[u8], code: ResponseCode) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&packet[..2]);
    // QR, the opcode as sent, RD as sent; RCODE.
    out[2] = 0x80 | (packet[2] & 0x79);
    out[3] = code.low() & 0x0f;
    out
}

fn error_reply(request: &Message, code: ResponseCode) -> Vec<u8> {
    let mut m = response_to(request);
    m.metadata.response_code = code;
    if let [q] = request.queries.as_slice() {
        m.add_query(q.clone());
    }
    m.to_vec()
        .unwrap_or_else(|_| header_error(&[0, 0, 0, 0], ResponseCode::ServFail))
}

/// A response's header for `request`: its id, opcode, RD and CD; EDNS when it used EDNS.
fn response_to(request: &Message) -> Message {
    let mut m = Message::new(request.id, MessageType::Response, request.op_code);
    m.metadata.recursion_desired = request.recursion_desired;
    m.metadata.checking_disabled = request.checking_disabled;
    if let Some(e) = &request.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        edns.set_dnssec_ok(e.flags().dnssec_ok);
        m.set_edns(edns);
    }
    m
}

/// What [`reply`] did to make the answer fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Whole,
    /// The additional section was left out (no TC: RFC 2181 §9).
    NoAdditional,
    /// The answer did not fit: TC set, sections empty, the client asks again over TCP.
    Truncated,
}

/// The reply to `q` carrying `answer`, within `q.limit` bytes. ANY over UDP gets the
/// minimal answer of RFC 8482 (one HINFO), so it cannot be used for amplification.
pub fn reply(q: &Question, mut answer: Answer, transport: Transport) -> (Vec<u8>, Fit) {
    if transport == Transport::Udp
        && q.query.query_type() == RecordType::ANY
        && !answer.answers.is_empty()
    {
        let hinfo = HINFO::new("RFC8482".into(), String::new());
        let ttl = answer.answers.iter().map(|r| r.ttl).min().unwrap_or(1);
        answer.answers = vec![Record::from_rdata(
            q.query.name().clone(),
            ttl,
            RData::HINFO(hinfo),
        )];
        answer.additionals.clear();
    }
    let mut m = response_to(&q.message);
    m.metadata.response_code = answer.rcode;
    m.metadata.authoritative = answer.authoritative;
    m.add_query(q.query.clone());
    m.answers = answer.answers;
    m.authorities = answer.authorities;
    m.additionals = answer.additionals;
    let limit = usize::from(q.limit);
    let mut fit = Fit::Whole;
    let mut bytes = encode(&m);
    if bytes.len() > limit && !m.additionals.is_empty() {
        m.additionals.clear();
        bytes = encode(&m);
        fit = Fit::NoAdditional;
    }
    if bytes.len() > limit {
        m.answers.clear();
        m.authorities.clear();
        m.metadata.truncation = true;
        bytes = encode(&m);
        fit = Fit::Truncated;
    }
    (bytes, fit)
}

/// A truncated reply with no records: what rate limiting "slips" instead of dropping, so
/// that a real client behind a spoofed flood still gets its answer over TCP.
pub fn slip(q: &Question) -> Vec<u8> {
    let mut m = response_to(&q.message);
    m.add_query(q.query.clone());
    m.metadata.truncation = true;
    encode(&m)
}

/// Turns a reply in `out` into its truncated, empty form in place: the header with TC set
/// and no records, and the question. (What rate limiting "slips".) A reply whose question
/// cannot be read (FORMERR) keeps its header alone; one shorter than a header is emptied:
/// nothing is sent.
pub fn truncate_in_place(out: &mut Vec<u8>) {
    if out.len() < 12 {
        out.clear();
        return;
    }
    match question_end(out) {
        Some(end) => {
            out.truncate(end);
            out[6..12].fill(0); // no answers, authorities or additionals
        }
        None => {
            // A reply without a (readable) question, e.g. FORMERR: its header alone.
            out.truncate(12);
            out[4..12].fill(0);
        }
    }
    out[2] |= 0x02; // TC
}

/// One past the first question of a message (its name is never compressed: it is the
/// first name in the message).
fn question_end(m: &[u8]) -> Option<usize> {
    if m.len() < 12 || m[4..6] != [0, 1] {
        return None;
    }
    let mut at = 12;
    loop {
        let len = usize::from(*m.get(at)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
    let end = at + 1 + 4;
    (end <= m.len()).then_some(end)
}

fn encode(m: &Message) -> Vec<u8> {
    // Every record here was built from checked names and bounded data; a failure would be
    // a bug, and SERVFAIL says so without taking the gateway down.
    m.to_vec().unwrap_or_else(|_| {
        let mut e = Message::new(m.id, MessageType::Response, m.op_code);
        e.metadata.response_code = ResponseCode::ServFail;
        e.to_vec().unwrap_or_default()
    })
}

/// A query made by a client (`mpreg client dns-resolve`, tests): `id` from the caller's
/// RNG, recursion desired, EDNS0 offering `payload` bytes when given.
pub fn query(id: u16, name: &Name, qtype: RecordType, payload: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), qtype));
    if let Some(p) = payload {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    encode(&m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn ask(bytes: &[u8], t: Transport) -> Question {
        match parse(bytes, t) {
            Parsed::Ask(q) => q,
            other => panic!("not a question: {other:?}"),
        }
    }

    #[test]
    fn malformed_packets_get_formerr_and_responses_get_nothing() {
        let garbage = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'x'];
        let Parsed::Reply(r, _) = parse(&garbage, Transport::Udp) else {
            panic!("no reply")
        };
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.id, 0x1234);
        assert_eq!(m.response_code, ResponseCode::FormErr);
        assert_eq!(m.message_type, MessageType::Response);
        assert!(matches!(parse(&[1, 2, 3], Transport::Udp), Parsed::Drop));
        let mut resp = query(7, &Name::from_str("a.mpreg.").unwrap(), RecordType::A, None);
        resp[2] |= 0x80;
        assert!(matches!(parse(&resp, Transport::Udp), Parsed::Drop));
    }

    #[test]
    fn sizes_follow_edns() {
        let name = Name::from_str("a.mpreg.").unwrap();
        let plain = ask(&query(1, &name, RecordType::A, None), Transport::Udp);
        assert_eq!(plain.limit, 512);
        let big = ask(&query(1, &name, RecordType::A, Some(4096)), Transport::Udp);
        assert_eq!(big.limit, UDP_PAYLOAD);
        let small = ask(&query(1, &name, RecordType::A, Some(100)), Transport::Udp);
        assert_eq!(small.limit, 512);
        let tcp = ask(&query(1, &name, RecordType::A, None), Transport::Tcp);
        assert_eq!(tcp.limit, u16::MAX);
    }

    #[test]
    fn an_answer_too_big_for_udp_is_truncated() {
        let name = Name::from_str("a.mpreg.").unwrap();
        let q = ask(&query(9, &name, RecordType::A, None), Transport::Udp);
        let answers = (0..100u8)
            .map(|i| {
                Record::from_rdata(
                    name.clone(),
                    5,
                    RData::A(hickory_proto::rr::rdata::A::new(10, 0, 0, i)),
                )
            })
            .collect();
        let answer = Answer {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers,
            authorities: vec![],
            additionals: vec![],
            denied: None,
        };
        let (bytes, fit) = reply(&q, answer.clone(), Transport::Udp);
        assert_eq!(fit, Fit::Truncated);
        let (mut whole, _) = reply(&q, answer.clone(), Transport::Tcp);
        truncate_in_place(&mut whole);
        assert_eq!(whole, bytes, "a slipped reply is the truncated one");
        assert!(bytes.len() <= 512);
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.truncation);
        assert_eq!(m.id, 9);
        let q = ask(&query(9, &name, RecordType::A, None), Transport::Tcp);
        let (bytes, fit) = reply(&q, answer, Transport::Tcp);
        assert_eq!(fit, Fit::Whole);
        assert_eq!(Message::from_vec(&bytes).unwrap().answers.len(), 100);
    }
}
