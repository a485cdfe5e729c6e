"""Which jobs and model folders are text-to-image, read from files alone."""

from tests.diffusion.conftest import dreambooth_channel
from tuneforge.contract import Paths
from tuneforge.diffusion import find_pipeline_root, is_pipeline_dir, is_text_to_image_job


def test_a_language_model_job_is_not_text_to_image(job, tiny):
    paths = Paths(job.base)
    assert not is_text_to_image_job(paths, {})
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction")
    assert not is_text_to_image_job(paths, {"model_id": ""})


def test_each_signal(tmp_path, sd_base):
    from tests.conftest import Job

    by_data = Job(tmp_path / "a")
    dreambooth_channel(by_data.channel("training"), count=1)
    assert is_text_to_image_job(Paths(by_data.base), {})
    by_channel = Job(tmp_path / "b")
    by_channel.add_model(sd_base)
    assert is_text_to_image_job(Paths(by_channel.base), {})
    by_model_id = Job(tmp_path / "c")
    assert is_text_to_image_job(Paths(by_model_id.base), {"model_id": f'"{sd_base}"'})
    assert not is_text_to_image_job(Paths(by_model_id.base), {"model_id": str(tmp_path / "missing")})


def test_pipeline_folders(tmp_path, sd_base, tiny):
    assert is_pipeline_dir(sd_base) and not is_pipeline_dir(tiny("llama")) and not is_pipeline_dir(None)
    nested = tmp_path / "outer" / "inner"
    nested.mkdir(parents=True)
    (nested / "model_index.json").write_text("{}")
    assert find_pipeline_root(tmp_path) == nested and find_pipeline_root(tiny("llama")) is None
