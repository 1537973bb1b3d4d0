"""OpenID Connect and the device grant: display names, post-logout URIs, the sign-in a code
or refresh token came from, and device authorizations

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 13:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=200), nullable=True))
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('post_logout_redirect_uris', sa.JSON(), nullable=True))
    op.execute("UPDATE oauth_clients SET post_logout_redirect_uris = '[]'")
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.alter_column('post_logout_redirect_uris', existing_type=sa.JSON(), nullable=False)
    with op.batch_alter_table('authorization_codes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('nonce', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('auth_time', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('sid', sa.String(length=64), nullable=True))
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth_time', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('sid', sa.String(length=64), nullable=True))
    op.create_table(
        'device_authorizations',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('device_code_digest', sa.String(length=64), nullable=False),
        sa.Column('user_code', sa.String(length=16), nullable=False),
        sa.Column('org_id', sa.String(length=32), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('scope', sa.Text(), nullable=False),
        sa.Column('interval', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_polled_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('decision', sa.String(length=10), nullable=True),
        sa.Column('user_id', sa.String(length=32), nullable=True),
        sa.Column('scope_granted', sa.Text(), nullable=True),
        sa.Column('auth_time', sa.DateTime(timezone=True), nullable=True),
        sa.Column('sid', sa.String(length=64), nullable=True),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['client_id'], ['oauth_clients.client_id']),
        sa.ForeignKeyConstraint(['org_id'], ['organizations.id']),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('device_code_digest'),
        sa.UniqueConstraint('user_code'),
    )
    with op.batch_alter_table('device_authorizations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_authorizations_client_id'), ['client_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_device_authorizations_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_table('device_authorizations')
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_column('sid')
        batch_op.drop_column('auth_time')
    with op.batch_alter_table('authorization_codes', schema=None) as batch_op:
        batch_op.drop_column('sid')
        batch_op.drop_column('auth_time')
        batch_op.drop_column('nonce')
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.drop_column('post_logout_redirect_uris')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('name')
