-- Every webhook event looks its subscribers up, partly through this GIN index (a database
-- subscription matched by one of its data source ids). With GIN's fast update, new entries
-- wait in a pending list that every lookup scans in full until a vacuum merges it: measured
-- at 100,000 subscriptions, 6.4 ms per lookup before a vacuum and 0.15 ms after. Subscriptions
-- change rarely and are looked up on every event, so entries go into the index at once.
alter index subscriptions_data_source_ids_idx set (fastupdate = off);
select gin_clean_pending_list('subscriptions_data_source_ids_idx'::regclass);
