-- collector/store/console_schema.py 0009_site_wales: a Welsh school (its lead is the
-- Designated Safeguarding Person, DSP).
ALTER TABLE sites ADD COLUMN wales INTEGER NOT NULL DEFAULT 0;
