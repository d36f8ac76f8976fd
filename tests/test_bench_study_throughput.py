"""bench/study_throughput.py: each run starts from empty study stores, keeping caches and corpus."""
from __future__ import annotations

from tests.bench_scripts import load_bench


def test_a_run_removes_earlier_stores_but_keeps_the_compile_cache_and_corpus(tmp_path):
    st = load_bench("study_throughput")
    for name in ("throughput.db", "throughput.db-wal", "hyperband.db", "stdlib_corpus_16MiB.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "throughput.db-compile-cache").mkdir()
    st.fresh_stores(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stdlib_corpus_16MiB.txt",
                                                         "throughput.db-compile-cache"]
