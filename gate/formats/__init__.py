"""One reader per checkpoint format, plus byte sniffing (content decides, not the extension)."""
