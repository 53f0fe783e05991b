//! A fake OpenAI-compatible chat-completions server for tests.
