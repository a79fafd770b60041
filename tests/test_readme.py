"""README.md stays true: its library example runs as written."""

import re

from conftest import REPO_ROOT


def test_readme_library_example_runs():
    readme = (REPO_ROOT / "README.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    metrics = namespace["metrics"]
    assert float(metrics["count"]) == 32 and float(metrics["correct"]) / 32 > 0.5  # 10 classes
