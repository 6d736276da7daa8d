-- Enqueue from another application, inside that application's own transaction:
-- the email job exists if and only if the order does (no dual write, no outbox
-- table of your own). Workers wake within milliseconds of the COMMIT.
BEGIN;

INSERT INTO shop.orders (customer_email, total) VALUES ('ada@example.com', 42.00)
RETURNING id;  -- say 1001

INSERT INTO sluice.jobs (task, queue, payload, idempotency_key)
VALUES ('email', 'mail',
        jsonb_build_object('to', jsonb_build_array('ada@example.com'),
                           'subject', 'Your order 1001',
                           'body', 'Thank you! It ships tomorrow.'),
        'order-1001-confirmation');

-- A follow-up that must wait for the email: a two-node DAG in plain SQL.
INSERT INTO sluice.jobs (task, payload) VALUES ('http', '{"method": "POST", "url": "https://crm.example.com/hooks/order", "json": {"order": 1001}}')
RETURNING id;  -- say 1002
INSERT INTO sluice.job_edges (parent_id, child_id)
SELECT j.id, 1002 FROM sluice.jobs j WHERE j.idempotency_key = 'order-1001-confirmation';

COMMIT;

-- Or with the function, which returns the existing job for a reused key:
--   SELECT sluice.enqueue('email', '{"to": ["ada@example.com"], "subject": "Hi", "body": "..."}',
--                         queue => 'mail', idempotency_key => 'order-1001-confirmation');
