"""ramen.progress: bars that stay quiet in log files."""
import io
import subprocess
import sys

from ramen import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_in_a_log_file_updates_every_30_s_and_on_a_terminal_as_tqdm_does(monkeypatch):
    """tqdm wrote up to ten updates a second to a batch job's log: a days-long run's log grew by
    hundreds of megabytes of bar lines."""
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress.bar(total=1000, file=log) as bar:
        assert bar.mininterval == progress.QUIET_INTERVAL_S
        for _ in range(1000):
            bar.update()
    assert log.getvalue().count("\r") <= 3  # the first, the last and the close: no update in between
    monkeypatch.setattr(sys, "stderr", _Terminal())
    with progress.bar(total=3, file=io.StringIO()) as bar:
        assert bar.mininterval == 0.1  # tqdm's own
    monkeypatch.setattr(sys, "stderr", None)  # a daemon without stderr: quiet, no crash
    with progress.bar(total=3, file=io.StringIO()) as bar:
        assert bar.mininterval == progress.QUIET_INTERVAL_S


def test_tqdm_mininterval_in_the_environment_overrides_it(tmp_path, ramen_env):
    """tqdm reads TQDM_* when it is imported: the user's choice stands, in a log file too."""
    code = "from ramen import progress; print(progress.bar(total=3).mininterval)"
    with open(tmp_path / "err", "w") as err:
        done = subprocess.run([sys.executable, "-c", code], capture_output=False, stdout=subprocess.PIPE,
                              stderr=err, text=True, env={**ramen_env, "TQDM_MININTERVAL": "2"}, check=True)
    assert float(done.stdout) == 2


def test_a_training_writes_its_epoch_bar_to_a_log_file_once_or_twice_an_epoch(tmp_path, capsys, monkeypatch):
    """The step's set_postfix redrew the bar at every step, whatever the interval: a log line a step."""
    from ramen import TrainConfig, train
    from ramen.datasets import synthetic

    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    cfg = TrainConfig(encoder="tiny", epochs=1, batch_size=8, eval_every=0, cpu_bf16=False)
    train(synthetic("tiny", seed=0), cfg, out_dir=tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    drawn = [part for part in err.split("\r") if part.startswith("epoch 1/1:")]
    assert "100%" in drawn[-1] and len(drawn) <= 4, len(drawn)  # it drew 2 + one a step (37)
