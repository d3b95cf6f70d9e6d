"""Progress and JSON reporters, subscribed to run events."""
