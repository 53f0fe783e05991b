-- Emails are unique case-insensitively. SQLite's `lower(email)` folds ASCII letters only, so
-- `Émile@x.io` and `émile@x.io` were two users here and one on PostgreSQL. The key is now
-- folded by the service (Unicode lowercase, the same on every backend) and stored; existing
-- rows keep `lower(email)` (ASCII-folded).
alter table users add column email_key text;
update users set email_key = lower(email);
drop index users_email_key;
create unique index users_email_key on users (email_key);
