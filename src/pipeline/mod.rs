//! The running daemon: capture -> face -> generator -> output threads (being written).
