-- Emails are unique case-insensitively. `lower(email)` folds by the database's LC_CTYPE (under
-- `C`, ASCII letters only) and SQLite's only ever folds ASCII, so the same two addresses could
-- be duplicates on one database and not on another. The key is now folded by the service
-- (Unicode lowercase, the same everywhere) and stored; existing rows keep `lower(email)`.
alter table users add column email_key text;
update users set email_key = lower(email);
drop index users_email_key;
create unique index users_email_key on users (email_key);
