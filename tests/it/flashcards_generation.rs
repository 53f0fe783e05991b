//! Flashcard generators against the fixtures and a fake OpenAI-compatible server.
