-- collector/store/console_schema.py 0008_user_language: each account's console language
-- ('en' or 'cy').
ALTER TABLE users ADD COLUMN language TEXT NOT NULL DEFAULT 'en';
