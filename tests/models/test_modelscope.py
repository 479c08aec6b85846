"""ModelScope StructBERT directories: their own files are refused as every model file is."""

import os
import shutil

import pytest

import structsent
from structsent.models import load_checkpoint


@pytest.mark.parametrize("name", ["label_mapping.json", "configuration.json", "pytorch_model.bin"])
def test_a_modelscope_file_that_is_a_pipe_is_refused_by_name(tmp_path, modelscope_dirs, name):
    """A label_mapping.json pipe was skipped (StructBERT's default labels used in silence); a
    configuration.json pipe made the directory a Hugging Face one."""
    d = shutil.copytree(modelscope_dirs["encoder"], tmp_path / "m")
    (d / name).unlink()
    os.mkfifo(d / name)
    with pytest.raises(structsent.ModelFormatError, match=rf"/{name}: not a regular file \(a named pipe\)$"):
        load_checkpoint(d)
