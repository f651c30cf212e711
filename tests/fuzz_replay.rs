//! The fuzz targets' entry points (`oxccl::fuzzing`, `oxccl_transports::fuzzing`) on inputs
//! generated here: valid messages, then the same with bytes flipped, cut or extended, and
//! random bytes. It runs on stable in every test run; `scripts/fuzz.sh` runs the
//! coverage-guided cargo-fuzz targets on the same entry points.

use oxccl::fuzzing as ox;
use oxccl_transports::fuzzing as tr;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `seeds`, each mutated `rounds` times (flips, cuts, growth, splices), plus random inputs.
fn inputs(seeds: &[Vec<u8>], rounds: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    let mut out: Vec<Vec<u8>> = seeds.to_vec();
    for _ in 0..rounds {
        let mut v = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(5) {
                0 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
                1 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] = [0, 0xff, 0x7f, 0x80][rng.below(4)];
                }
                2 => v.truncate(rng.below(v.len() + 1)),
                3 => v.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
                _ => {
                    let other = &seeds[rng.below(seeds.len())];
                    let cut = rng.below(other.len() + 1);
                    v.extend_from_slice(&other[cut..]);
                }
            }
        }
        out.push(v);
    }
    for _ in 0..rounds / 4 {
        let len = rng.below(300);
        out.push((0..len).map(|_| rng.next() as u8).collect());
    }
    out
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

#[test]
fn control_frames() {
    let mut beat = vec![];
    beat.extend(le32(1));
    beat.extend(le32(20));
    beat.extend([7u8; 20]);
    let mut dead = vec![];
    dead.extend(le32(4));
    dead.extend(le32(4));
    dead.extend(le32(3));
    let mut bye = vec![];
    bye.extend(le32(3));
    bye.extend(le32(0));
    let all = [beat.clone(), dead.clone(), bye.clone()].concat();
    for input in inputs(&[beat, dead, bye, all], 20_000, 1) {
        ox::control_frames(&input);
    }
}

#[test]
fn bootstrap_messages() {
    // A reply for 2 ranks: ROUND (1), count, two length-prefixed blobs.
    let mut reply = vec![2u8, 1];
    reply.extend(le32(2));
    for blob in [&b"node0"[..], &b"node1-blob"[..]] {
        reply.extend(le32(blob.len() as u32));
        reply.extend_from_slice(blob);
    }
    let mut error = vec![2u8, 3];
    error.extend(le32(4));
    error.extend_from_slice(b"oops");
    for input in inputs(&[reply, error], 20_000, 2) {
        ox::bootstrap_messages(&input);
    }
}

#[test]
fn unique_id() {
    let id = oxccl::UniqueId::new(
        "127.0.0.1:0".parse().unwrap(),
        std::time::Duration::from_secs(1),
    )
    .unwrap()
    .to_bytes()
    .to_vec();
    for input in inputs(&[id], 20_000, 3) {
        ox::unique_id(&input);
    }
}

#[test]
fn tcp_stream() {
    // Two messages: header (len, seq, tag) then payload.
    let mut two = vec![1u8, 16];
    for (seq, len) in [(0u32, 16u32), (1, 5)] {
        two.extend(le32(len));
        two.extend(le32(seq));
        two.extend(le32(0));
        two.extend(std::iter::repeat_n(0xab, len as usize));
    }
    for input in inputs(&[two], 1_500, 4) {
        tr::tcp_stream(&input);
    }
}

#[test]
fn handshakes() {
    // The acceptor's side gets a connector's answer; the connector's side an acceptor's hello.
    let answer = [vec![0u8; 64], le32(4).to_vec(), b"rank".to_vec()].concat();
    let hello = [
        b"OXCCLTCP".to_vec(),
        le32(2).to_vec(),
        vec![9u8; 32],
        vec![1u8; 33],
    ]
    .concat();
    for input in inputs(&[answer], 1_000, 5) {
        tr::acceptor_handshake(&input);
    }
    for input in inputs(&[hello], 300, 6) {
        tr::connector_handshake(&input);
    }
}
