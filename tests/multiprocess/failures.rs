//! When a rank dies, the others fail with an error naming the dead peer instead of hanging,
//! and the launcher exits non-zero.

mod common;

fn killed_rank(transport: &str) {
    // The deadline is long, so an error here comes from detecting the dead peer.
    let env = [("OXCCL_TRANSPORT", transport), ("OXCCL_TIMEOUT", "60")];
    let since = std::time::SystemTime::now();
    let ran = common::run_job(
        4,
        &["--grace", "30"],
        common::selftest(),
        &["--kill-rank", "3", "--kill-after", "3"],
        &env,
    );
    assert!(
        ran.code.is_some_and(|c| c != 0),
        "launcher exit {:?}\n{}",
        ran.code,
        ran.output
    );
    for r in 0..3 {
        let line = ran
            .output
            .lines()
            .find(|l| l.starts_with(&format!("[{r}] error:")))
            .unwrap_or_else(|| panic!("rank {r} reported no error\n{}", ran.output));
        assert!(line.contains("all_reduce"), "{line}");
        assert!(
            !line.contains("made no progress"),
            "rank {r} waited for the deadline: {line}"
        );
    }
    assert!(
        ran.output.contains("rank 3 exited with signal 9"),
        "{}",
        ran.output
    );
    // Detection, not the 60 s deadline, ended the job (a liveness guard, not a timing claim).
    assert!(
        ran.elapsed < std::time::Duration::from_secs(55),
        "took {:?}",
        ran.elapsed
    );
    // The killed rank's segment (and everyone else's) was unlinked once all had mapped it.
    common::assert_no_segments_left(since);
}

#[test]
fn killed_rank_over_shm() {
    killed_rank("shm");
}

#[test]
fn killed_rank_over_tcp() {
    killed_rank("tcp");
}
