//! Flashcard generation: the generator trait, the offline `rules` generator and the `openai` one.
//! Depends on nothing internal.
