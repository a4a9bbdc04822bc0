//! A fast hash for the route tables: their keys are prefixes the daemon chose, not input from
//! a peer, so the DoS resistance of std's SipHash buys nothing, and its cost was a third of
//! the Adj-RIB-Out's work in a profile of a million-route load.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate over 8-byte words (as FxHash), with a murmur3 finaliser so the low bits
/// that pick a hashbrown bucket depend on every input bit.
#[derive(Debug, Default, Clone, Copy)]
pub struct PrefixHasher(u64);

impl PrefixHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for PrefixHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            if let Some(dst) = w.get_mut(..c.len()) {
                dst.copy_from_slice(c);
            }
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        let mut k = self.0;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
}

/// A `HashMap` with [`PrefixHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<PrefixHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;
    use std::net::Ipv4Addr;

    use ipnet::Ipv4Net;

    #[test]
    fn sequential_prefixes_spread_over_the_low_bits() {
        let b = BuildHasherDefault::<PrefixHasher>::default();
        let mut buckets = vec![0u32; 1024];
        for i in 0..65_536u32 {
            let p = Ipv4Net::new(Ipv4Addr::from(0xc612_0000 + i), 32).unwrap_or_default();
            buckets[(b.hash_one(p) & 1023) as usize] += 1;
        }
        // 64 per bucket on average; a poor low-bit mix piles them into a few.
        assert!(
            buckets.iter().all(|&n| (20..=120).contains(&n)),
            "{buckets:?}"
        );
    }
}
