//! Properties of the record parser, the one piece of the reader that sees
//! bytes from untrusted files: it round-trips, never panics, accepts a record
//! only when its checksum matches, and never allocates, whatever the header says.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use md5::{Digest, Md5};
use prefork::scoreboard::record::{encode, parse, Parsed, HEADER_LEN};
use proptest::prelude::*;

/// Counts the allocations of the current thread, so that a test can check
/// that a call allocates nothing. It is this test binary's allocator, for
/// every module; the count is per thread, so other tests do not disturb it.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// `parse(buf)`, checking that it allocated nothing and that a status it
/// returns is borrowed from `buf`.
fn parse_without_allocating(buf: &[u8]) -> Parsed<'_> {
    let before = ALLOCATIONS.with(Cell::get);
    let parsed = parse(buf);
    let after = ALLOCATIONS.with(Cell::get);
    assert_eq!(after, before, "parse allocated");
    if let Parsed::Valid(status) = &parsed {
        let inside = buf.as_ptr_range();
        let status_range = status.as_ptr_range();
        assert!(inside.start <= status_range.start && status_range.end <= inside.end);
    }
    parsed
}

fn header_of(status: &[u8]) -> Vec<u8> {
    let mut header = Md5::digest(status).to_vec();
    header.extend_from_slice(&(status.len() as u32).to_be_bytes());
    header
}

proptest! {
    // 256 cases in CI; PROPTEST_CASES=N for a longer run by hand.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn encoded_statuses_parse_back_whatever_follows_them(
        status in prop::collection::vec(any::<u8>(), 0..2048),
        trailing in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut record = encode(&status);
        prop_assert_eq!(&record[..HEADER_LEN], &header_of(&status)[..]);
        prop_assert_eq!(parse_without_allocating(&record), Parsed::Valid(&status));
        // Leftovers of an earlier, longer status are ignored.
        record.extend_from_slice(&trailing);
        prop_assert_eq!(parse_without_allocating(&record), Parsed::Valid(&status));
    }

    #[test]
    fn arbitrary_bytes_are_valid_only_with_a_matching_checksum(
        buf in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        match parse_without_allocating(&buf) {
            Parsed::Empty => prop_assert!(buf.len() < HEADER_LEN),
            Parsed::Incomplete { needed } => {
                prop_assert!(buf.len() >= HEADER_LEN);
                prop_assert!(needed > buf.len() as u64);
            }
            Parsed::Mismatch => {
                let len = u32::from_be_bytes(buf[16..20].try_into().unwrap()) as usize;
                let digest = Md5::digest(&buf[HEADER_LEN..HEADER_LEN + len]);
                prop_assert_ne!(&buf[..16], digest.as_slice());
            }
            Parsed::Valid(status) => {
                prop_assert_eq!(&buf[..HEADER_LEN], &header_of(status)[..]);
            }
        }
    }

    #[test]
    fn a_flipped_bit_in_a_record_is_never_valid(
        status in prop::collection::vec(any::<u8>(), 0..512),
        at in any::<prop::sample::Index>(),
        bit in 0..8u8,
    ) {
        let mut record = encode(&status);
        let at = at.index(record.len());
        record[at] ^= 1 << bit;
        let parsed = parse_without_allocating(&record);
        prop_assert!(!matches!(parsed, Parsed::Valid(_)), "{:?} after flipping byte {}", parsed, at);
    }

    #[test]
    fn any_truncation_of_a_record_is_empty_or_incomplete(
        status in prop::collection::vec(any::<u8>(), 0..512),
        cut in any::<prop::sample::Index>(),
    ) {
        let record = encode(&status);
        let cut = cut.index(record.len()); // strictly shorter than the record
        let expected = if cut < HEADER_LEN {
            Parsed::Empty
        } else {
            Parsed::Incomplete { needed: record.len() as u64 }
        };
        prop_assert_eq!(parse_without_allocating(&record[..cut]), expected);
    }

    #[test]
    fn any_header_length_is_parsed_without_allocating(
        len in any::<u32>(),
        body in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut buf = header_of(&body);
        buf[16..20].copy_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&body);
        let parsed = parse_without_allocating(&buf);
        if (len as usize) > body.len() {
            prop_assert_eq!(parsed, Parsed::Incomplete { needed: HEADER_LEN as u64 + u64::from(len) });
        } else {
            prop_assert!(matches!(parsed, Parsed::Valid(_) | Parsed::Mismatch));
        }
    }
}
