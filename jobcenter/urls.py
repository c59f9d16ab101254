from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from jobcenter.health import healthz
from jobcenter.oidc import views as oidc

# The browsable API's login (DRF's `rest_framework.urls`, under the same names) with the
# admin's form: only active staff get a session, as at /admin/login/.
api_login = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="rest_framework/login.html",
            authentication_form=AdminAuthenticationForm,
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # Sign-in with OpenID Connect (jobcenter.oidc; 404 unless configured), under the names
    # mozilla-django-oidc reverses. The admin's "Log out" ends the provider's session too.
    path("oidc/authenticate/", oidc.SignIn.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", oidc.Callback.as_view(), name="oidc_authentication_callback"),
    path("admin/logout/", oidc.SignOut.as_view(), name="oidc_logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("jobcenter.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI's start-up script as a file of its own (?script): no inline script (CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/auth/", include((api_login, "rest_framework"))),
]
