"""The one settings object: read from ENCLAVE_* variables, an optional .env file and an optional TOML file."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SkipValidation,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from portal.clock import Clock, SystemClock

DATABASE_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


class OIDCProviderSettings(BaseModel):
    """One OpenID Connect identity provider (Entra ID, Google Workspace, Okta, Keycloak, ...)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    label: str
    discovery_url: str
    client_id: str
    client_secret: SecretStr | None = None  # None: a public client protected by PKCE alone
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    groups_claim: str = "groups"
    roles_claim: str = "roles"


class RoleRuleSettings(BaseModel):
    """A claim -> role mapping rule seeded into the database at start-up (admins edit them later)."""

    model_config = ConfigDict(extra="forbid")

    claim: str  # e.g. "groups", "roles", "email", or any custom claim
    match: Literal["equals", "contains", "email_domain"] = "equals"
    value: str
    role: str  # the Enclave role, or "*" with effect=deny to refuse everything
    effect: Literal["allow", "deny"] = "allow"
    provider: str | None = None  # restrict the rule to one provider


class RetentionPolicySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    conversation_days: int = Field(ge=0)  # 0 = zero retention: never written down
    overrides_shorter: bool = False  # when True this policy wins over shorter ones of the person's other roles


def _is_internal_host(host: str, internal_hosts: set[str]) -> bool:
    if host in internal_hosts or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything Enclave can be told. Built once at start-up and passed into create_app()."""

    model_config = SettingsConfigDict(
        env_prefix="ENCLAVE_",
        env_file=None,
        extra="ignore",
        arbitrary_types_allowed=True,
        validate_default=True,
    )

    mode: Literal["development", "production"] = "development"
    secret_key: SecretStr | None = None
    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_url: str = "http://127.0.0.1:8000"
    internal_hosts: list[str] = Field(default_factory=list)

    database_url: str | None = None  # default: SQLite file under data_dir
    database_echo: bool = False

    qdrant_url: str | None = None  # default: Qdrant's in-process engine under data_dir
    qdrant_api_key: SecretStr | None = None
    qdrant_collection: str = "enclave_chunks"

    embedding_model_path: Path | None = None  # default: the packaged all-MiniLM-L6-v2
    embedding_dim: int = Field(default=384, gt=0)  # the vector size of the embedding model
    embedding_endpoint: str | None = None  # optional OpenAI-compatible /v1/embeddings
    embedding_endpoint_model: str | None = None
    # Let questions be embedded through ONNX Runtime where that is faster (about 100 MB more per process).
    embedding_query_onnx: bool = True
    # ... and through its int8 copy of the model where that agrees with the model and is faster still.
    embedding_query_int8: bool = True
    reranker_model_path: Path | None = None

    llm_base_url: str | None = None  # default: start the embedded llama.cpp server
    llm_model: str = "smollm2"
    llm_api_key: SecretStr = SecretStr("not-needed")
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_tokens: int = Field(default=512, gt=0)
    llm_context_window: int = Field(default=8192, gt=256)
    embedded_llm: bool = True
    embedded_llm_port: int = 8081
    embedded_llm_threads: int = Field(default=1, ge=1)  # llama.cpp threads; more only pays with spare cores

    redis_url: str | None = None

    # Chat: limits per role (a person gets the most generous of their roles' values; a role not named gets the default).
    chat_top_k: int = Field(default=6, ge=1, le=50)  # passages retrieved per question
    chat_questions_per_minute: int = Field(default=20, ge=1)
    chat_role_questions_per_minute: dict[str, int] = Field(default_factory=dict)
    chat_role_max_answer_tokens: dict[str, int] = Field(default_factory=dict)  # default: llm_max_tokens
    chat_general_answer_roles: list[str] = Field(default_factory=list)  # may get answers when no passage matched
    chat_stream_sync_s: float = Field(default=1.0, gt=0)  # how often streams check for Stop and renew heartbeats
    # The process that saves a question asks the model at once and keeps the answer's first tokens for the page's
    # stream for this long (0: the model is asked only when the stream opens). A stream served by another process
    # asks the model itself and this early answer is cancelled when its time is up (see docs/chat.md).
    chat_answer_head_start_s: float = Field(default=3.0, ge=0, le=60)

    oidc_providers: list[OIDCProviderSettings] = Field(default_factory=list)
    embedded_idp: bool = True  # start the local test identity provider with sample people
    embedded_idp_port: int = 8090
    role_rules: list[RoleRuleSettings] = Field(default_factory=list)
    access_contact: str = "your IT service desk"
    scim_token: SecretStr | None = None

    session_idle_minutes: int = Field(default=15, gt=0)
    session_absolute_hours: int = Field(default=12, gt=0)

    max_upload_mb: int = Field(default=50, gt=0)
    workers: int = Field(default=1, ge=0)  # in-process indexing workers (0: use `enclave worker` processes)
    # The usage dashboard's estimate of what the same traffic would cost on a metered cloud LLM API.
    usage_price_input_per_million: float = Field(default=2.50, ge=0)
    usage_price_output_per_million: float = Field(default=10.00, ge=0)
    usage_price_currency: str = "USD"

    retention_policies: list[RetentionPolicySettings] = Field(default_factory=list)
    default_retention_days: int = Field(default=90, ge=0)
    audit_retention_days: int = Field(default=2190, gt=0)  # six years
    audit_question_text: bool = False
    purge_interval_minutes: int = Field(default=60, gt=0)
    purge_in_process: bool = True  # purge on schedule inside the portal; off where a CronJob runs `enclave purge`
    purge_check_seconds: float = Field(default=60.0, gt=0)  # how often each portal asks whether the purge is due
    break_glass_notices: bool = True  # tell a person on their next visit that an admin read their conversation

    seed_sample_data: bool = True

    # Not settable from the environment: the clock time is read from (tests pass a MovableClock).
    clock: SkipValidation[Clock] = Field(default_factory=SystemClock, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        toml_path = os.environ.get("ENCLAVE_CONFIG_FILE")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)

    @field_validator("database_url")
    @classmethod
    def _known_database_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in DATABASE_SCHEMES:
            raise ValueError(f"unknown database scheme {scheme or value!r}; use sqlite:/// or postgresql://")
        return DATABASE_SCHEMES[scheme] + value[len(scheme) :]

    @field_validator("internal_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("llm_base_url", "qdrant_url", "embedding_endpoint", "redis_url")
    @classmethod
    def _url_has_scheme(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"{value!r} is not a URL (expected scheme://host...)")
        return value

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.mode != "production":
            return self
        problems: list[str] = []
        if self.secret_key is None or len(self.secret_key.get_secret_value()) < 32:
            problems.append("secret_key: production mode needs ENCLAVE_SECRET_KEY of at least 32 characters")
        internal = set(self.internal_hosts)
        for name in ("llm_base_url", "qdrant_url", "embedding_endpoint"):
            url = getattr(self, name)
            if url and urlsplit(url).scheme == "http" and not _is_internal_host(urlsplit(url).hostname or "", internal):
                problems.append(f"{name}: plain http:// to a remote host is refused in production; use https://")
        if self.database_url and self.database_url.startswith("postgresql"):
            parts = urlsplit(self.database_url)
            host = parts.hostname or "localhost"
            if not _is_internal_host(host, internal) and "ssl" not in (parts.query or ""):
                problems.append("database_url: a remote PostgreSQL needs TLS in production (add ?ssl=require)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # Derived values -------------------------------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'enclave.db').resolve()}"

    @property
    def uses_embedded_llm(self) -> bool:
        return self.llm_base_url is None and self.embedded_llm

    @property
    def effective_llm_base_url(self) -> str:
        if self.llm_base_url:
            return self.llm_base_url
        return f"http://127.0.0.1:{self.embedded_llm_port}/v1"

    @property
    def uses_embedded_idp(self) -> bool:
        return not self.oidc_providers and self.embedded_idp

    @property
    def vector_path(self) -> Path:
        return self.data_dir / "vectors"

    @property
    def files_path(self) -> Path:
        return self.data_dir / "files"

    @property
    def cookie_secure(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def effective_secret_key(self) -> str:
        """The signing key; in development a random key persisted under data_dir so restarts keep sessions."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        key_file = self.data_dir / "secret_key"
        if not key_file.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            key_file.write_text(os.urandom(32).hex())
            key_file.chmod(0o600)
        return key_file.read_text().strip()


class SettingsError(Exception):
    """Bad settings; `lines` holds one plain line per bad value."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment (plus overrides) or raise SettingsError with one line per problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(format_validation_errors(exc)) from None


def format_validation_errors(exc: ValidationError) -> list[str]:
    lines: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if loc == "settings":
            lines.extend(f"bad setting {part.strip()}" for part in msg.split(";"))
        else:
            lines.append(f"bad setting ENCLAVE_{loc.split('.')[0].upper()}: {msg}")
    return lines
