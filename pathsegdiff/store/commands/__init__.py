"""One module per ``pathsegdiff store`` command: info, ls, verify, copy, pack, compact."""
