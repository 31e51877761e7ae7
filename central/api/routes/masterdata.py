"""``/api/v1/articles``, ``/api/v1/partners``, ``/api/v1/lots``: the master data tickets refer to.

Everyone who may read sees them; admins and operators (``master:write``) create and change them. Nothing is
deleted — tickets refer to it: an article or partner no longer used is set ``active: false``; lots have no such
flag and simply stay. Codes are unique per resource (409 when taken).

Prices are exact: a decimal **string** (``"12.50"``, never a JSON number) per article unit, with its ISO 4217
currency — both or neither. ``vat_rate`` is a percentage string (``"7"``, ``"19"``, ``"10.7"`` for the §24 UStG
flat rate).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from central.api.crud import code_name_query, code_name_sortable, get_or_404, insert_coded, update_coded
from central.api.deps import SessionDep
from central.api.errors import CONFLICT, ERROR_RESPONSES, NOT_FOUND, ApiError
from central.api.pagination import DEFAULT_LIMIT
from central.api.params import (
    MAX_ID,
    Cursor,
    IdFilter,
    IdPath,
    Limit,
    WholeNumber,
    page,
    patch_field,
    sort_param,
    text_filter,
)
from central.api.security import CanRead, CanWriteMaster
from central.db.models import Article, Lot, Partner
from central.db.values import CODE, NO_NUL, NON_BLANK, NON_NEGATIVE_DECIMAL_RE, decimal_or_none, money, plain

router = APIRouter()
CURRENCY = r"^[A-Z]{3}$"
VAT_RATE = r"^(100(\.0{1,6})?|[1-9]?[0-9](\.[0-9]{1,6})?)$"  # 0 … 100 percent
UNIT = r"^[A-Za-z0-9%._/-]{1,8}$"
VAT_ID = r"^[A-Za-z0-9 .+*/-]{1,32}$"
PartnerKind = Literal["customer", "supplier", "both"]


class Page(BaseModel):
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null at the end")


# --- articles ----------------------------------------------------------------------------------------------------


class ArticleOut(BaseModel):
    id: int = Field(examples=[3])
    code: str = Field(description="unique key, as the ERP knows the article", examples=["WHEAT-B"])
    name: str = Field(examples=["Wheat, bread quality"])
    unit: str = Field(description="the unit it is traded in", examples=["t"])
    price: str | None = Field(None, description="exact price per unit (decimal string, at least the currency's "
                              "minor units), with `currency`",
                              examples=["212.50"])
    currency: str | None = Field(None, description="ISO 4217, with `price`", examples=["EUR"])
    vat_rate: str | None = Field(None, description="VAT percentage (decimal string)", examples=["7"])
    active: bool = Field(description="false: no longer used (kept for the tickets that refer to it)")
    created_at: datetime
    updated_at: datetime


class ArticlePage(Page):
    items: list[ArticleOut]


class ArticleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no 0 for false
    code: str = Field(max_length=32, pattern=CODE, examples=["WHEAT-B"])
    name: str = Field(max_length=128, pattern=NON_BLANK, examples=["Wheat, bread quality"])
    unit: str = Field(pattern=UNIT, description="kg, t, piece, …", examples=["t"])
    price: str | None = Field(None, pattern=NON_NEGATIVE_DECIMAL_RE, description="exact decimal string ≥ 0, at "
                              "most 6 decimals; give `currency` with it", examples=["212.50"])
    currency: str | None = Field(None, pattern=CURRENCY, description="ISO 4217 code, with `price`",
                                 examples=["EUR"])
    vat_rate: str | None = Field(None, pattern=VAT_RATE, description="percent, 0 … 100, decimal string",
                                 examples=["7"])
    active: bool = True


class ArticleUpdate(BaseModel):
    """Only the fields sent are changed; null clears price, currency or vat_rate (price and currency together)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no 0 for false
    code: str = patch_field(max_length=32, pattern=CODE)
    name: str = patch_field(max_length=128, pattern=NON_BLANK)
    unit: str = patch_field(pattern=UNIT)
    price: str | None = Field(None, pattern=NON_NEGATIVE_DECIMAL_RE, examples=["215.00"])
    currency: str | None = Field(None, pattern=CURRENCY, examples=["EUR"])
    vat_rate: str | None = Field(None, pattern=VAT_RATE, examples=["7"])
    active: bool = patch_field(description="false: no longer used")


def _check_price(a: Article) -> None:
    if (a.price is None) != (a.currency is None):
        field = "currency" if a.currency is None else "price"
        raise ApiError(422, "invalid_request", "price and currency go together: give both or neither", field=field)


def _article_values(values: dict[str, Any]) -> dict[str, Any]:
    return {k: decimal_or_none(v) if k in ("price", "vat_rate") else v for k, v in values.items()}


def _article_out(a: Article) -> ArticleOut:
    return ArticleOut(id=a.id, code=a.code, name=a.name, unit=a.unit, price=money(a.price, a.currency),
                      currency=a.currency, vat_rate=plain(a.vat_rate), active=a.active, created_at=a.created_at,
                      updated_at=a.updated_at)


@router.get("/api/v1/articles", response_model=ArticlePage, responses=ERROR_RESPONSES, tags=["master data"],
            summary="List articles")
def list_articles(
    session: SessionDep, principal: CanRead,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Annotated[str, sort_param("code, name, created_at or id", "code")] = "code",
    code: Annotated[str | None, text_filter("exactly this code", 32)] = None,
    q: Annotated[str | None, text_filter("name contains this (case-insensitive)")] = None,
    active: bool | None = None,
) -> ArticlePage:
    query = code_name_query(Article, code=code, q=q)
    if active is not None:
        query = query.where(Article.active == active)
    rows, nxt = page(session, query, code_name_sortable(Article), Article.id, sort=sort, limit=limit, cursor=cursor)
    return ArticlePage(items=[_article_out(a) for a in rows], next_cursor=nxt)


@router.post("/api/v1/articles", response_model=ArticleOut, status_code=201, tags=["master data"],
             responses={**ERROR_RESPONSES, **CONFLICT}, summary="Create an article")
def create_article(body: ArticleCreate, session: SessionDep, principal: CanWriteMaster) -> ArticleOut:
    now = datetime.now(UTC)
    article = Article(**_article_values(body.model_dump()), created_at=now, updated_at=now)
    _check_price(article)
    insert_coded(session, principal, article, "articles", "article")
    return _article_out(article)


@router.get("/api/v1/articles/{article_id}", response_model=ArticleOut, tags=["master data"],
            responses={**ERROR_RESPONSES, **NOT_FOUND}, summary="Get an article")
def get_article(article_id: IdPath, session: SessionDep, principal: CanRead) -> ArticleOut:
    return _article_out(get_or_404(session, Article, article_id, "article", "article_id"))


@router.patch("/api/v1/articles/{article_id}", response_model=ArticleOut, tags=["master data"],
              responses={**ERROR_RESPONSES, **NOT_FOUND, **CONFLICT},
              summary="Change an article (active: false instead of deleting)")
def update_article(article_id: IdPath, body: ArticleUpdate, session: SessionDep,
                   principal: CanWriteMaster) -> ArticleOut:
    article = get_or_404(session, Article, article_id, "article", "article_id")
    changes = body.model_dump(exclude_unset=True)
    update_coded(session, principal, article, _article_values(changes), "articles", "article", _check_price)
    return _article_out(article)


# --- partners ----------------------------------------------------------------------------------------------------


class PartnerOut(BaseModel):
    id: int = Field(examples=[7])
    code: str = Field(description="unique key, as the ERP knows the partner", examples=["P-1042"])
    name: str = Field(examples=['Hof Meyer "Am Deich", GbR'])
    kind: PartnerKind = Field(description="customer, supplier or both")
    address: str | None = Field(None, examples=["Deichstraße 4\n21762 Otterndorf"])
    vat_id: str | None = Field(None, description="VAT identification number", examples=["DE123456789"])
    active: bool = Field(description="false: no longer used (kept for the tickets that refer to it)")
    created_at: datetime
    updated_at: datetime


class PartnerPage(Page):
    items: list[PartnerOut]


class PartnerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no 0 for false
    code: str = Field(max_length=32, pattern=CODE, examples=["P-1042"])
    name: str = Field(max_length=200, pattern=NON_BLANK, examples=['Hof Meyer "Am Deich", GbR'])
    kind: PartnerKind = Field(examples=["supplier"])
    address: str | None = Field(None, max_length=1000, pattern=NO_NUL, examples=["Deichstraße 4\n21762 Otterndorf"])
    vat_id: str | None = Field(None, pattern=VAT_ID, examples=["DE123456789"])
    active: bool = True


class PartnerUpdate(BaseModel):
    """Only the fields sent are changed; null clears address or vat_id."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no 0 for false
    code: str = patch_field(max_length=32, pattern=CODE)
    name: str = patch_field(max_length=200, pattern=NON_BLANK)
    kind: PartnerKind = patch_field()
    address: str | None = Field(None, max_length=1000, pattern=NO_NUL)
    vat_id: str | None = Field(None, pattern=VAT_ID)
    active: bool = patch_field(description="false: no longer used")


def _partner_out(p: Partner) -> PartnerOut:
    return PartnerOut(id=p.id, code=p.code, name=p.name, kind=p.kind, address=p.address,  # type: ignore[arg-type]
                      vat_id=p.vat_id, active=p.active, created_at=p.created_at, updated_at=p.updated_at)


@router.get("/api/v1/partners", response_model=PartnerPage, responses=ERROR_RESPONSES, tags=["master data"],
            summary="List partners (customers and suppliers)")
def list_partners(
    session: SessionDep, principal: CanRead,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Annotated[str, sort_param("code, name, created_at or id", "code")] = "code",
    code: Annotated[str | None, text_filter("exactly this code", 32)] = None,
    q: Annotated[str | None, text_filter("name contains this (case-insensitive)")] = None,
    active: bool | None = None,
    kind: PartnerKind | None = None,
) -> PartnerPage:
    query = code_name_query(Partner, code=code, q=q)
    if active is not None:
        query = query.where(Partner.active == active)
    if kind is not None:
        query = query.where(Partner.kind == kind)
    rows, nxt = page(session, query, code_name_sortable(Partner), Partner.id, sort=sort, limit=limit, cursor=cursor)
    return PartnerPage(items=[_partner_out(p) for p in rows], next_cursor=nxt)


@router.post("/api/v1/partners", response_model=PartnerOut, status_code=201, tags=["master data"],
             responses={**ERROR_RESPONSES, **CONFLICT}, summary="Create a partner")
def create_partner(body: PartnerCreate, session: SessionDep, principal: CanWriteMaster) -> PartnerOut:
    now = datetime.now(UTC)
    partner = Partner(**body.model_dump(), created_at=now, updated_at=now)
    insert_coded(session, principal, partner, "partners", "partner")
    return _partner_out(partner)


@router.get("/api/v1/partners/{partner_id}", response_model=PartnerOut, tags=["master data"],
            responses={**ERROR_RESPONSES, **NOT_FOUND}, summary="Get a partner")
def get_partner(partner_id: IdPath, session: SessionDep, principal: CanRead) -> PartnerOut:
    return _partner_out(get_or_404(session, Partner, partner_id, "partner", "partner_id"))


@router.patch("/api/v1/partners/{partner_id}", response_model=PartnerOut, tags=["master data"],
              responses={**ERROR_RESPONSES, **NOT_FOUND, **CONFLICT},
              summary="Change a partner (active: false instead of deleting)")
def update_partner(partner_id: IdPath, body: PartnerUpdate, session: SessionDep,
                   principal: CanWriteMaster) -> PartnerOut:
    partner = get_or_404(session, Partner, partner_id, "partner", "partner_id")
    changes = body.model_dump(exclude_unset=True)
    update_coded(session, principal, partner, changes, "partners", "partner")
    return _partner_out(partner)


# --- lots --------------------------------------------------------------------------------------------------------


class LotOut(BaseModel):
    id: int = Field(examples=[12])
    code: str = Field(description="unique lot (Charge) code", examples=["L-2025-0042"])
    article_id: int = Field(description="the article the lot is of", examples=[3])
    partner_id: int | None = Field(None, description="the supplier it came from", examples=[7])
    notes: str | None = None
    created_at: datetime
    updated_at: datetime


class LotPage(Page):
    items: list[LotOut]


class LotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no 0 for false
    code: str = Field(max_length=64, pattern=CODE, examples=["L-2025-0042"])
    article_id: Annotated[int, WholeNumber] = Field(ge=1, le=MAX_ID, examples=[3])
    partner_id: Annotated[int | None, WholeNumber] = Field(None, ge=1, le=MAX_ID, examples=[7])
    notes: str | None = Field(None, max_length=2000, pattern=NO_NUL)


class LotUpdate(BaseModel):
    """Only the fields sent are changed; null clears partner_id or notes."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no 0 for false
    code: str = patch_field(max_length=64, pattern=CODE)
    article_id: Annotated[int, WholeNumber] = patch_field(ge=1, le=MAX_ID)
    partner_id: Annotated[int | None, WholeNumber] = Field(None, ge=1, le=MAX_ID)
    notes: str | None = Field(None, max_length=2000, pattern=NO_NUL)


def _lot_out(lot: Lot) -> LotOut:
    return LotOut(id=lot.id, code=lot.code, article_id=lot.article_id, partner_id=lot.partner_id, notes=lot.notes,
                  created_at=lot.created_at, updated_at=lot.updated_at)


def _check_lot_refs(session: SessionDep, values: dict[str, Any]) -> None:
    if values.get("article_id") is not None and session.get(Article, values["article_id"]) is None:
        raise ApiError(422, "invalid_reference", f"no article with id {values['article_id']}", field="article_id")
    if values.get("partner_id") is not None and session.get(Partner, values["partner_id"]) is None:
        raise ApiError(422, "invalid_reference", f"no partner with id {values['partner_id']}", field="partner_id")


@router.get("/api/v1/lots", response_model=LotPage, responses=ERROR_RESPONSES, tags=["master data"],
            summary="List lots")
def list_lots(
    session: SessionDep, principal: CanRead,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Annotated[str, sort_param("code, created_at or id", "code")] = "code",
    code: Annotated[str | None, text_filter("exactly this code", 64)] = None,
    q: Annotated[str | None, text_filter("code contains this (case-insensitive)")] = None,
    article_id: IdFilter = None,
    partner_id: IdFilter = None,
) -> LotPage:
    query = select(Lot)
    if code is not None:
        query = query.where(Lot.code == code)
    if q:
        query = query.where(Lot.code.icontains(q, autoescape=True))
    if article_id is not None:
        query = query.where(Lot.article_id == article_id)
    if partner_id is not None:
        query = query.where(Lot.partner_id == partner_id)
    rows, nxt = page(session, query, {"code": Lot.code, "created_at": Lot.created_at, "id": Lot.id}, Lot.id,
                     sort=sort, limit=limit, cursor=cursor)
    return LotPage(items=[_lot_out(lot) for lot in rows], next_cursor=nxt)


@router.post("/api/v1/lots", response_model=LotOut, status_code=201, tags=["master data"],
             responses={**ERROR_RESPONSES, **CONFLICT}, summary="Create a lot")
def create_lot(body: LotCreate, session: SessionDep, principal: CanWriteMaster) -> LotOut:
    values = body.model_dump()
    _check_lot_refs(session, values)
    now = datetime.now(UTC)
    lot = Lot(**values, created_at=now, updated_at=now)
    insert_coded(session, principal, lot, "lots", "lot")
    return _lot_out(lot)


@router.get("/api/v1/lots/{lot_id}", response_model=LotOut, tags=["master data"],
            responses={**ERROR_RESPONSES, **NOT_FOUND}, summary="Get a lot")
def get_lot(lot_id: IdPath, session: SessionDep, principal: CanRead) -> LotOut:
    return _lot_out(get_or_404(session, Lot, lot_id, "lot", "lot_id"))


@router.patch("/api/v1/lots/{lot_id}", response_model=LotOut, tags=["master data"],
              responses={**ERROR_RESPONSES, **NOT_FOUND, **CONFLICT}, summary="Change a lot")
def update_lot(lot_id: IdPath, body: LotUpdate, session: SessionDep, principal: CanWriteMaster) -> LotOut:
    lot = get_or_404(session, Lot, lot_id, "lot", "lot_id")
    changes = body.model_dump(exclude_unset=True)
    _check_lot_refs(session, changes)
    update_coded(session, principal, lot, changes, "lots", "lot")
    return _lot_out(lot)
