"""signing keys in the database: sealed private keys, and a next key published ahead

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 08:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('private_key', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True))
    # Every key so far signed from its creation. Their PEMs move into private_key at the
    # next `sensei init` (the secret that seals them is not known to a migration).
    op.execute("UPDATE signing_keys SET activated_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.drop_column('activated_at')
        batch_op.drop_column('private_key')
