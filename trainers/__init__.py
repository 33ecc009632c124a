"""Training loops: alignment heads (CL / CWCL / L2) and FaST-VGS, run via `xmodal train` or the app's queue."""
