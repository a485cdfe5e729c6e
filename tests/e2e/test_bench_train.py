"""scripts/bench_train.py --method dpo end to end: tuneforge's real DPO job (pairs grouped by length,
and the random-batch control) and TRL's DPOTrainer, one step each on 8 generated pairs, in their
own processes, and the table it prints."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dpo_mode_runs_both_sides_and_prints_the_table():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_train.py"), "--method", "dpo", "--rows", "8",
                           "--repeats", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in done.stdout.splitlines() if line.startswith("| tuneforge_dpo") or line.startswith("| trl_dpo")}
    assert set(rows) == {"tuneforge_dpo", "tuneforge_dpo_random", "trl_dpo"}, done.stdout
    # one batch of all 8 pairs: grouping changes nothing, the padding is the same with and without it
    assert rows["tuneforge_dpo"][7] == rows["tuneforge_dpo_random"][7] != "-" and rows["trl_dpo"][7] == "-", done.stdout
    for side, (round_, tokens_per_s, pairs_per_s, s_per_step, loop_s, wall_s, rss, padding, loss) in rows.items():
        assert round_ == "1" and float(tokens_per_s.replace(",", "")) > 0 and float(rss) > 0, (side, done.stdout)
        assert abs(float(s_per_step) - float(loop_s)) < 0.06, (side, done.stdout)  # 8 pairs, batch 8: one step
        assert abs(float(pairs_per_s) - 8 / float(loop_s)) < 0.01 and float(wall_s) > float(loop_s), (side, done.stdout)
        # one step: policy == reference (the adapter starts as a no-op), so the sigmoid DPO loss is log 2 on both sides
        assert loss == "0.6931", (side, done.stdout)
    assert "tuneforge_dpo/trl_dpo (means of 1 rounds): tokens/s x" in done.stdout
    assert "tuneforge_dpo_random/trl_dpo (means of 1 rounds): tokens/s x" in done.stdout
