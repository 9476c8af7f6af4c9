//! The DNS gateway's cached path allocates nothing per query: a counting allocator around
//! the code a cache hit runs (`cache::answer_cached`, the rate limiter's check and the
//! counters), after a warm-up that grows the reply buffer once. The socket's `send_to` is
//! outside (tokio's UDP send allocates nothing either, but it is not ours to count).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use mpreg::dns::cache::{AnswerCache, KEY_MAX, answer_cached, scan};
use mpreg::dns::metrics::DnsStats;
use mpreg::dns::rrl::{RateLimiter, Verdict};
use mpreg::dns::wire::{Transport, query};

/// Counts this thread's allocations (a const-initialized thread local: counting allocates
/// nothing itself).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn a_cache_hit_allocates_nothing() {
    let name = Name::from_str("_svc._tcp.web.shop.mpreg.").unwrap();
    // Queries as resolvers send them: ids vary, and so does the name's case (DNS 0x20).
    let queries: Vec<Vec<u8>> = (0..64u16)
        .map(|i| {
            let mut q = query(i, &name, RecordType::SRV, Some(1232));
            if i % 2 == 1 {
                q[13] = q[13].to_ascii_uppercase();
            }
            q
        })
        .collect();
    // A reply as the gateway caches it: here the query itself marked as a response with an
    // answer's worth of bytes after it (the cache neither parses nor checks what it holds).
    let mut reply = queries[0].clone();
    reply[2] |= 0x84;
    reply.extend_from_slice(&[0u8; 300]);
    let mut key = [0u8; KEY_MAX];
    let s = scan(&queries[0], Transport::Udp, &mut key).expect("a plain query scans");
    let mut cache = AnswerCache::default();
    let variants = vec![reply.clone(), reply.clone(), reply.clone(), reply];
    cache.keep(&key[..s.key_len], variants, 7, 1_000);
    let mut rrl = RateLimiter::new(100, 2);
    let stats = DnsStats::default();
    let source: IpAddr = "192.0.2.1".parse().unwrap();
    let mut out = Vec::new();
    let mut hit = |q: &[u8], now_ms: u64, out: &mut Vec<u8>| {
        let mut key = [0u8; KEY_MAX];
        let s = scan(q, Transport::Udp, &mut key).expect("scans");
        let (kind, fit) =
            answer_cached(&mut cache, &key[..s.key_len], s, q, 7, now_ms, out).expect("a hit");
        stats.cache_hit();
        let verdict = rrl.check(source, kind, now_ms);
        stats.answered(
            Transport::Udp,
            ResponseCode::NoError,
            fit,
            Duration::from_micros(40),
            now_ms,
        );
        assert_eq!(out[..2], q[..2], "the asker's id");
        verdict
    };
    // Warm-up: the reply buffer grows to a reply's size.
    hit(&queries[0], 1_000, &mut out);
    let before = allocations();
    let mut sent = 0;
    for round in 0..100u64 {
        for q in &queries {
            if hit(q, 1_000 + round, &mut out) == Verdict::Send {
                sent += 1;
            }
        }
    }
    let after = allocations();
    assert_eq!(
        after - before,
        0,
        "allocations in 6400 cached answers (rate limiting included)"
    );
    assert!(sent > 0, "some answers were sent, not all rate-limited");
    // The counter counts: one more buffer is one more allocation.
    let buffer: Vec<u8> = Vec::with_capacity(std::hint::black_box(64));
    assert_eq!(allocations() - after, 1);
    drop(buffer);
}
