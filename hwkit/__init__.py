"""What `synth` and `train` both use and neither owns: the user-facing error type, file helpers (checksums,
atomic writes, refusals to overwrite), and the progress display."""
