"""Everything that turns format readers' Arrow batches into what users hold."""
