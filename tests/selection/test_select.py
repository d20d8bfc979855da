def test_the_selection_job_does_not_import_torch() -> None:
    """Per-slide fixed cost: the selection step (NumPy) must not pay for importing torch."""
    import subprocess
    import sys

    code = "import sys, hwsi_model.selection.steps; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
