//! A trace sent in pieces over many connections is handled by one core.

use std::collections::{BTreeMap, BTreeSet};

use crate::gen::{request, span};
use crate::harness::{read_traces, spans_in, wait_until, Shardtel};

#[test]
fn trace_pieces_over_many_connections_meet_on_one_core() {
    let st = Shardtel::start_config(|c| c.file_pipelines());
    let traces = 64u64;
    let pieces = 8u64;
    // Request p carries span p of every trace: each trace arrives in 8 pieces.
    // Each request on a fresh connection, which the kernel spreads over the cores'
    // SO_REUSEPORT listeners.
    for p in 0..pieces {
        st.post_traces(&request((0..traces).map(|t| span(7, t, p)).collect()));
    }
    let total = (traces * pieces) as usize;
    let count = || spans_in(&st.out()).len();
    assert!(
        wait_until(20, || count() >= total),
        "spans missing; log:\n{}",
        st.log()
    );
    let mut cores_of: BTreeMap<Vec<u8>, BTreeSet<usize>> = BTreeMap::new();
    for (core, r) in read_traces(&st.out()) {
        for rs in r.resource_spans {
            for ss in rs.scope_spans {
                for sp in ss.spans {
                    cores_of.entry(sp.trace_id).or_default().insert(core);
                }
            }
        }
    }
    assert_eq!(cores_of.len(), traces as usize);
    for (trace, cores) in &cores_of {
        assert_eq!(
            cores.len(),
            1,
            "trace {trace:02x?} was handled on cores {cores:?}"
        );
    }
    let used: BTreeSet<usize> = cores_of.values().flatten().copied().collect();
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if n > 1 {
        assert!(used.len() > 1, "all traces landed on one core: {used:?}");
        // spans crossed cores through the mesh
        assert!(
            wait_until(5, || st.metric_sum("shardtel_mesh_sent_batches_total", "")
                > 0),
            "{}",
            st.metrics()
        );
    }
}
