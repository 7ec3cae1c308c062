import pytest

from audit.models import AppendOnlyError, Event
from audit.services import event_record


@pytest.fixture
def event(org):
    return event_record(organization=org, action="group_created").event


def test_saving_a_recorded_event_again_is_refused(event):
    stored = Event.objects.get(pk=event.pk)
    stored.message = "tampered"
    with pytest.raises(AppendOnlyError, match="cannot be updated"):
        stored.save()
    assert Event.objects.get(pk=event.pk).message != "tampered"


def test_queryset_update_and_delete_are_refused(event):
    with pytest.raises(AppendOnlyError):
        Event.objects.filter(pk=event.pk).update(message="tampered")
    with pytest.raises(AppendOnlyError):
        Event.objects.filter(pk=event.pk).delete()
    with pytest.raises(AppendOnlyError):
        Event.objects.all().bulk_update([event], ["message"])
    assert Event.objects.filter(pk=event.pk, message=event.message).exists()


def test_instance_delete_is_refused(event):
    with pytest.raises(AppendOnlyError, match="only the retention job"):
        Event.objects.get(pk=event.pk).delete()
    assert Event.objects.filter(pk=event.pk).exists()


def test_the_django_admin_offers_no_change_or_delete(client, staff, event):
    client.force_login(staff)
    change = client.get(f"/staff/audit/event/{event.pk}/change/")
    assert change.status_code == 200
    assert b"Save" not in change.content and b"deletelink" not in change.content
    response = client.post(f"/staff/audit/event/{event.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    response = client.post(
        "/staff/audit/event/",
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )
    assert Event.objects.filter(pk=event.pk).exists()
