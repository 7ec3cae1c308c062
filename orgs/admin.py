"""The Django admin for staff. Every change it makes to an organization's
audit-relevant state (plan, memberships and roles, activity settings, sites, products,
verified domains) is recorded through audit.services like any other activity, with
the staff user as the actor and the request's IP address and user agent."""

from axes import admin as axes_admin
from axes.models import AccessAttempt
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import Max
from django.template.response import TemplateResponse

from audit.models import ActivitySetting
from audit.services import activity_setting_refusal, activity_setting_update, request_meta

from .forms import UserChangeForm, UserCreationForm
from .models import (
    ApiKey,
    Group,
    IngestKey,
    Membership,
    Organization,
    Plan,
    Product,
    Site,
    User,
    VerifiedDomain,
)
from .services import (
    ChangeAuthor,
    account_memberships_removed_record,
    domain_record,
    ingest_key_create,
    ingest_key_revoke,
    membership_change_record,
    membership_record,
    memberships_before,
    organization_plan_change_record,
    plan_retention_refusal,
    plan_update_record,
    product_added_record,
    sign_in_unlock_record,
    site_added_record,
)


class ReadOnlyAdminMixin:
    """Staff may look, not add, change or delete (records that are history or code)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class DeletionsRecordedMixin:
    """For a ModelAdmin whose deletions are activities: `deletion_record` runs for each
    object before it goes, whether deleted on its own page or in bulk from the list."""

    deletion_select_related: tuple[str, ...] = ()

    def deletion_record(self, request, obj) -> None:
        raise NotImplementedError

    def delete_model(self, request, obj):
        self.deletion_record(request, obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset.select_related(*self.deletion_select_related):
            self.deletion_record(request, obj)
        super().delete_queryset(request, queryset)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "is_active", "date_joined"]
    list_filter = ["is_staff", "is_superuser", "is_active"]
    search_fields = ["email", "name"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Profile", {"fields": ["name", "time_zone"]}),
        (
            "Permissions",
            {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]},
        ),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [
        (None, {"classes": ["wide"], "fields": ["email", "name", "password1", "password2"]})
    ]

    # Deleting an account ends its memberships: each organization records the removal.
    def delete_model(self, request, obj):
        account_memberships_removed_record(by=ChangeAuthor.from_request(request), users=[obj])
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        account_memberships_removed_record(by=ChangeAuthor.from_request(request), users=queryset)
        super().delete_queryset(request, queryset)


class PlanForm(forms.ModelForm):  # the admin supplies the model and fields
    def clean_retention_days(self):
        days = self.cleaned_data["retention_days"]
        if refusal := plan_retention_refusal(days):
            raise forms.ValidationError(refusal)
        return days


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    """Entitlements and retention apply to every organization on the plan: each change
    is recorded in each of them (orgs.services.plan_update_record)."""

    form = PlanForm
    list_display = [
        "name",
        "key",
        "audit_log",
        "admin_activity",
        "user_created_activity",
        "classification_activity",
        "api_token_activity",
        "export_activity",
        "streaming",
        "retention_days",
    ]
    readonly_fields = ["key"]

    def save_model(self, request, obj, form, change):
        before = Plan.objects.get(pk=obj.pk) if change else None
        super().save_model(request, obj, form, change)
        if before is not None:
            plan_update_record(by=ChangeAuthor.from_request(request), before=before, after=obj)

    def has_delete_permission(self, request, obj=None):
        return False  # organizations are on it (PROTECT); a plan goes out of use instead


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class SiteInline(admin.TabularInline):
    model = Site
    extra = 0


class DomainInline(admin.TabularInline):
    model = VerifiedDomain
    extra = 0


class ActivitySettingInline(admin.TabularInline):
    """Stored / Not stored per product. Saved through activity_setting_update (see
    OrganizationAdmin.save_formset), so a staff change is recorded like an admin's.
    Read-only on plans without the setting; no rows to delete (Stored is the default)."""

    model = ActivitySetting
    fk_name = "organization"
    extra = 0
    can_delete = False
    fields = ["product", "content_stored", "updated_at", "updated_by"]
    readonly_fields = ["updated_at", "updated_by"]
    verbose_name = "activity setting (user-created content)"
    verbose_name_plural = "activity settings (user-created content: stored or not)"

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        field = formset.form.base_fields.get("product")
        if field is not None:  # only this organization's products, chosen, not edited here
            field.queryset = Product.objects.filter(site__organization=obj).select_related("site")
            for link in ("can_add_related", "can_change_related", "can_view_related"):
                setattr(field.widget, link, False)
        return formset

    def has_add_permission(self, request, obj=None):
        return self._allowed(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._allowed(obj) and super().has_change_permission(request, obj)

    @staticmethod
    def _allowed(obj) -> bool:
        return obj is not None and not activity_setting_refusal(obj)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "plan", "created_at"]
    list_filter = ["plan"]
    search_fields = ["name"]
    list_select_related = ["plan"]
    inlines = [SiteInline, DomainInline, MembershipInline, ActivitySettingInline]

    def save_model(self, request, obj, form, change):
        old_plan = obj.__class__.objects.get(pk=obj.pk).plan if change else None
        super().save_model(request, obj, form, change)
        if old_plan is not None and old_plan.pk != obj.plan_id:
            organization_plan_change_record(
                by=ChangeAuthor.from_request(request), organization=obj, old_plan=old_plan
            )

    def save_formset(self, request, form, formset, change):
        by = ChangeAuthor.from_request(request)
        if formset.model is Membership:
            self._save_memberships(by, formset)
        elif formset.model is ActivitySetting:
            self._save_activity_settings(request, form.instance, formset)
        elif formset.model is Site:
            super().save_formset(request, form, formset, change)
            for site in formset.new_objects:
                site_added_record(by=by, site=site)
        elif formset.model is VerifiedDomain:
            super().save_formset(request, form, formset, change)
            for domain in formset.new_objects:
                domain_record(by=by, domain=domain, action="domain_verified")
            for domain in formset.deleted_objects:
                domain_record(by=by, domain=domain, action="domain_removed")
        else:
            super().save_formset(request, form, formset, change)

    @staticmethod
    def _save_memberships(by: ChangeAuthor, formset) -> None:
        before = memberships_before(f.instance.pk for f in formset.initial_forms)
        formset.save()
        for membership in formset.new_objects:
            membership_record(by=by, membership=membership, action="org_member_added")
        for membership, _ in formset.changed_objects:
            membership_change_record(by=by, membership=membership, before=before.get(membership.pk))
        for membership in formset.deleted_objects:
            membership_record(
                by=by, membership=before.get(membership.pk, membership), action="org_member_removed"
            )

    @staticmethod
    def _save_activity_settings(request, org: Organization, formset) -> None:
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for subform in formset.forms:
            if not subform.has_changed():
                continue
            try:
                activity_setting_update(
                    organization=org,
                    product=subform.cleaned_data["product"],
                    content_stored=subform.cleaned_data["content_stored"],
                    actor_user=request.user,
                    **request_meta(request),
                )
            except PermissionDenied as refusal:  # e.g. the plan was changed in the same save
                messages.warning(request, f"Activity settings were not changed: {refusal}")
                return


@admin.register(Membership)
class MembershipAdmin(DeletionsRecordedMixin, admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role", "organization"]
    search_fields = ["user__email", "user__name", "organization__name"]
    list_select_related = ["user", "organization"]
    autocomplete_fields = ["user", "organization"]

    def save_model(self, request, obj, form, change):
        before = memberships_before([obj.pk]).get(obj.pk) if change else None
        super().save_model(request, obj, form, change)
        membership_change_record(
            by=ChangeAuthor.from_request(request), membership=obj, before=before
        )

    deletion_select_related = ("user", "organization__plan")

    def deletion_record(self, request, obj):
        membership_record(
            by=ChangeAuthor.from_request(request), membership=obj, action="org_member_removed"
        )


@admin.register(VerifiedDomain)
class VerifiedDomainAdmin(DeletionsRecordedMixin, admin.ModelAdmin):
    list_display = ["domain", "organization", "verified_at"]
    search_fields = ["domain", "organization__name"]
    list_select_related = ["organization"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            domain_record(
                by=ChangeAuthor.from_request(request), domain=obj, action="domain_verified"
            )

    deletion_select_related = ("organization__plan",)

    def deletion_record(self, request, obj):
        domain_record(by=ChangeAuthor.from_request(request), domain=obj, action="domain_removed")


class ProductInline(admin.TabularInline):
    model = Product
    extra = 0


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "organization"]
    list_filter = ["organization"]
    search_fields = ["name", "organization__name"]
    list_select_related = ["organization"]
    inlines = [ProductInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            site_added_record(by=ChangeAuthor.from_request(request), site=obj)

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        for product in formset.new_objects:
            product_added_record(by=ChangeAuthor.from_request(request), product=product)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["kind", "site", "organization"]
    list_filter = ["kind"]
    search_fields = ["site__name", "site__organization__name"]
    list_select_related = ["site__organization"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            product_added_record(by=ChangeAuthor.from_request(request), product=obj)

    readonly_fields = ["last_ingest_use"]

    @admin.display(ordering="site__organization__name")
    def organization(self, obj: Product):
        return obj.site.organization

    @admin.display(description="last ingest use")
    def last_ingest_use(self, obj: Product):
        """When any of the product's ingest keys was last used (revoked ones too)."""
        last = obj.ingest_keys.aggregate(last=Max("last_used_at"))["last"] if obj.pk else None
        return display_for_value(last, "-")


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "member_count"]
    list_filter = ["organization"]
    search_fields = ["name", "organization__name"]
    list_select_related = ["organization"]
    filter_horizontal = ["members"]

    @admin.display(description="members")
    def member_count(self, obj: Group) -> int:
        return obj.members.count()


# Sign-in lockouts (django-axes). Deleting the failed-attempt rows that lock an account
# out is how staff unlock it; each unlock is recorded in the account's organizations.
admin.site.unregister(AccessAttempt)


@admin.register(AccessAttempt)
class AccessAttemptAdmin(axes_admin.AccessAttemptAdmin):
    def delete_model(self, request, obj):
        sign_in_unlock_record(attempts=[obj], request=request)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        sign_in_unlock_record(attempts=list(queryset), request=request)
        super().delete_queryset(request, queryset)


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: org admins create and revoke keys on their page, where it is recorded.
    The secret is nowhere to show; its hash is not shown either."""

    list_display = [
        "name",
        "prefix",
        "organization",
        "creator_name",
        "created_at",
        "expires_at",
        "status",
        "last_used_at",
        "last_used_ip",
    ]
    list_filter = ["organization"]
    search_fields = ["name", "prefix", "organization__name"]
    list_select_related = ["organization"]
    fields = [
        "organization",
        "name",
        "prefix",
        "created_by",
        "creator_name",
        "created_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "last_used_at",
        "last_used_ip",
        "expiry_recorded_at",
    ]
    readonly_fields = fields

    @admin.display(description="status")
    def status(self, obj: ApiKey) -> str:
        return ApiKey.Status(obj.status).label


class IngestKeyAddForm(forms.ModelForm):
    class Meta:
        model = IngestKey
        fields = ["product", "name"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        products = self.fields["product"]
        products.queryset = Product.objects.select_related("site__organization").order_by(
            "site__organization__name", "site__name", "kind"
        )
        products.label_from_instance = lambda p: f"{p.site.organization.name}: {p}"


@admin.register(IngestKey)
class IngestKeyAdmin(admin.ModelAdmin):
    """Staff add a key (product and name) and see its secret once, on the page the add
    answers with (rendered there, never stored, not even in the session); they revoke
    keys with the list's action. Nothing else changes and nothing is deleted: the hash
    is not shown. Both are recorded with the staff user, IP and user agent."""

    add_form = IngestKeyAddForm
    list_display = [
        "name",
        "prefix",
        "product",
        "organization",
        "created_at",
        "last_used_at",
        "last_used_ip",
        "status",
    ]
    list_filter = ["product__site__organization"]
    search_fields = ["name", "prefix", "product__site__name", "product__site__organization__name"]
    list_select_related = ["product__site__organization"]
    fields = [
        "product",
        "name",
        "prefix",
        "created_by",
        "created_at",
        "revoked_at",
        "revoked_by",
        "last_used_at",
        "last_used_ip",
    ]
    readonly_fields = fields
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return IngestKeyAddForm.Meta.fields if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_revoke_permission(self, request) -> bool:
        return request.user.has_perm("orgs.change_ingestkey")

    def save_model(self, request, obj, form, change):
        key, secret = ingest_key_create(
            product=obj.product, name=obj.name, by=ChangeAuthor.from_request(request)
        )
        for field in IngestKey._meta.concrete_fields:  # obj becomes the saved key
            setattr(obj, field.attname, getattr(key, field.attname))
        obj._state.adding = False
        obj.new_secret = secret

    def response_add(self, request, obj, post_url_continue=None):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "key": obj,
            "secret": obj.new_secret,
            "title": f"Ingest key {obj.label} created",
        }
        return TemplateResponse(request, "admin/orgs/ingestkey/created.html", context)

    @admin.action(description="Revoke selected ingest keys", permissions=["revoke"])
    def revoke(self, request, queryset):
        by = ChangeAuthor.from_request(request)
        keys = queryset.select_related("product__site__organization__plan")
        revoked = sum(ingest_key_revoke(key=key, by=by) for key in keys)
        messages.success(request, f"Revoked {revoked} ingest key(s).")

    @admin.display(ordering="product__site__organization__name")
    def organization(self, obj: IngestKey):
        return obj.product.site.organization

    @admin.display(description="status")
    def status(self, obj: IngestKey) -> str:
        return obj.status.capitalize()
